package main

// Datastores the lab mounts: VMFS volumes found on devices and NFS exports. The lab owns
// these objects entirely (the simulator's own datastore code assumes local directories
// shared by every host), and keeps the datacenter, folder, cluster, host and
// HostDatastoreSystem references in step.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type dsMount struct {
	Accessible bool   `json:"accessible"`
	Reason     string `json:"inaccessible_reason,omitempty"`
}

type dsState struct {
	Ref        types.ManagedObjectReference
	Name       string
	Kind       string // "vmfs" or "nfs"
	NfsType    string // "NFS" or "NFS41"
	VmfsUUID   string
	Label      string
	NAA        string
	Server     string
	Path       string
	NasID      string
	ContentDir string
	SizeMB     int64
	Mounts     map[string]*dsMount // host name -> mount
	Created    time.Time
}

func (ds *dsState) volumeID() string {
	if ds.Kind == "vmfs" {
		return ds.VmfsUUID
	}
	return ds.NasID
}

func (ds *dsState) mountPath() string { return "/vmfs/volumes/" + ds.volumeID() }

// accessible reports whether some host reaches ds.
func (ds *dsState) accessible() bool {
	for _, m := range ds.Mounts {
		if m.Accessible {
			return true
		}
	}
	return false
}

func (ds *dsState) capacity() (int64, int64) {
	capacity := ds.SizeMB * 1024 * 1024
	var used int64
	_ = filepath.Walk(ds.ContentDir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			used += info.Size()
		}
		return nil
	})
	var st syscall.Statfs_t
	free := capacity - used
	if syscall.Statfs(ds.ContentDir, &st) == nil {
		if real := int64(st.Bavail) * int64(st.Bsize); real < free {
			free = real
		}
	}
	if free < 0 {
		free = 0
	}
	return capacity, free
}

func (ds *dsState) volume() types.BaseHostFileSystemVolume {
	capacity, _ := ds.capacity()
	if ds.Kind == "vmfs" {
		return &types.HostVmfsVolume{
			HostFileSystemVolume: types.HostFileSystemVolume{Type: "VMFS", Name: ds.Label, Capacity: capacity},
			BlockSizeMb:          1,
			BlockSize:            1024,
			MaxBlocks:            63963136,
			MajorVersion:         6,
			Version:              "6.82",
			Uuid:                 ds.VmfsUUID,
			Extent:               []types.HostScsiDiskPartition{{DiskName: ds.NAA, Partition: 1}},
			VmfsUpgradable:       false,
			Ssd:                  types.NewBool(true),
			Local:                types.NewBool(false),
		}
	}
	return &types.HostNasVolume{
		HostFileSystemVolume: types.HostFileSystemVolume{Type: ds.NfsType, Name: ds.Name, Capacity: capacity},
		RemoteHost:           ds.Server,
		RemotePath:           ds.Path,
	}
}

func (l *Lab) sortedDatastores() []*dsState {
	out := make([]*dsState, 0, len(l.datastores))
	for _, ds := range l.datastores {
		out = append(out, ds)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (l *Lab) vmfsByUUID(uuid string) *dsState {
	for _, ds := range l.datastores {
		if ds.Kind == "vmfs" && ds.VmfsUUID == uuid {
			return ds
		}
	}
	return nil
}

func (l *Lab) datastoreByName(name string) *dsState {
	for _, ds := range l.datastores {
		if ds.Name == name {
			return ds
		}
	}
	return nil
}

// vmfsMountedOn returns the VMFS datastore mounted on h from device naa, if any.
func (l *Lab) vmfsMountedOn(h *hostState, naa string) *dsState {
	for _, ds := range l.datastores {
		if ds.Kind == "vmfs" && ds.NAA == naa && ds.Mounts[h.Name] != nil {
			return ds
		}
	}
	return nil
}

// uniqueName returns name, or name suffixed " (1)", " (2)"... if a datastore has it.
func (l *Lab) uniqueName(name string) string {
	if l.datastoreByName(name) == nil {
		return name
	}
	for i := 1; ; i++ {
		n := fmt.Sprintf("%s (%d)", name, i)
		if l.datastoreByName(n) == nil {
			return n
		}
	}
}

func (l *Lab) newVmfsDatastore(hdr *vmfsHeader, d *device) *dsState {
	ds := &dsState{
		Name: l.uniqueName(hdr.Label), Kind: "vmfs", VmfsUUID: hdr.UUID, Label: hdr.Label,
		NAA: d.NAA, ContentDir: d.ContentDir, SizeMB: d.SizeMB, Mounts: map[string]*dsMount{},
	}
	l.createDatastoreObject(ds)
	return ds
}

func (l *Lab) newNasDatastore(name, nfsType, server, path string, export *NfsExport) *dsState {
	ds := &dsState{
		Name: name, Kind: "nfs", NfsType: nfsType, Server: server, Path: cleanNfsPath(path),
		NasID: nasVolumeID(server, path), ContentDir: export.ContentDir, SizeMB: export.SizeMB,
		Mounts: map[string]*dsMount{},
	}
	l.createDatastoreObject(ds)
	return ds
}

// createDatastoreObject registers ds in the inventory, with no host mounts yet (l.mu held).
func (l *Lab) createDatastoreObject(st *dsState) {
	st.Created = time.Now().UTC()
	obj := &simulator.Datastore{}
	obj.Self = types.ManagedObjectReference{Type: "Datastore", Value: l.newID("datastore")}
	obj.Name = st.Name
	obj.Capability = types.DatastoreCapability{
		DirectoryHierarchySupported:      true,
		PerFileThinProvisioningSupported: true,
		StorageIORMSupported:             types.NewBool(true),
		NativeSnapshotSupported:          types.NewBool(st.Kind == "nfs"),
		TopLevelDirectoryCreateSupported: types.NewBool(true),
		SeSparseSupported:                types.NewBool(true),
	}
	st.Ref = obj.Self
	l.datastores[st.Ref.Value] = st
	l.fillDatastore(st, obj)

	browser := &simulator.HostDatastoreBrowser{}
	browser.Datastore = []types.ManagedObjectReference{obj.Self}
	obj.Browser = simulator.Map.Put(browser).Reference()

	folder := simulator.Map.Get(l.dsFolderRef).(*simulator.Folder)
	simulator.Map.PutEntity(folder, obj)
	simulator.Map.AddReference(folder, &folder.ChildEntity, obj.Self)
	dc := simulator.Map.Get(l.dcRef).(*simulator.Datacenter)
	simulator.Map.AddReference(dc, &dc.Datastore, obj.Self)
}

func (l *Lab) fillDatastore(st *dsState, obj *simulator.Datastore) {
	capacity, free := st.capacity()
	now := time.Now()
	base := types.DatastoreInfo{
		Name: st.Name, Url: st.ContentDir, FreeSpace: free, MaxFileSize: 62 * 1024 * 1024 * 1024 * 1024,
		MaxVirtualDiskCapacity: 62 * 1024 * 1024 * 1024 * 1024, MaxMemoryFileSize: 62 * 1024 * 1024 * 1024 * 1024,
		Timestamp: &now,
	}
	summaryType := "VMFS"
	if st.Kind == "vmfs" {
		obj.Info = &types.VmfsDatastoreInfo{DatastoreInfo: base, Vmfs: st.volume().(*types.HostVmfsVolume)}
	} else {
		summaryType = st.NfsType
		obj.Info = &types.NasDatastoreInfo{DatastoreInfo: base, Nas: st.volume().(*types.HostNasVolume)}
	}
	accessible := false
	var mounts []types.DatastoreHostMount
	for _, hn := range sortedKeys(st.Mounts) {
		m := st.Mounts[hn]
		accessible = accessible || m.Accessible
		mounts = append(mounts, types.DatastoreHostMount{
			Key: l.hostByName[hn].Ref,
			MountInfo: types.HostMountInfo{
				Path: st.mountPath(), AccessMode: "readWrite", Mounted: types.NewBool(true),
				Accessible: types.NewBool(m.Accessible), InaccessibleReason: m.Reason,
			},
		})
	}
	obj.Host = mounts
	obj.Summary = types.DatastoreSummary{
		Datastore: &obj.Self, Name: st.Name, Url: st.ContentDir, Capacity: capacity, FreeSpace: free,
		Accessible: accessible, MultipleHostAccess: types.NewBool(len(mounts) > 1), Type: summaryType,
		MaintenanceMode: "normal",
	}
	obj.OverallStatus = types.ManagedEntityStatusGreen
	if !accessible {
		obj.OverallStatus = types.ManagedEntityStatusRed
	}
}

// publishDatastore refreshes the Datastore object from the lab state (l.mu held).
func (l *Lab) publishDatastore(st *dsState) {
	obj, ok := simulator.Map.Get(st.Ref).(*simulator.Datastore)
	if !ok {
		return
	}
	simulator.Map.WithLock(obj, func() {
		tmp := &simulator.Datastore{}
		tmp.Self = obj.Self
		l.fillDatastore(st, tmp)
		simulator.Map.Update(obj, []types.PropertyChange{
			{Name: "name", Val: st.Name},
			{Name: "info", Val: tmp.Info},
			{Name: "summary", Val: tmp.Summary},
			{Name: "host", Val: tmp.Host},
			{Name: "overallStatus", Val: tmp.OverallStatus},
		})
	})
}

// mountDatastore mounts ds on h (l.mu held).
func (l *Lab) mountDatastore(st *dsState, h *hostState) {
	st.Mounts[h.Name] = &dsMount{Accessible: true}
	host := simulator.Map.Get(h.Ref).(*simulator.HostSystem)
	simulator.Map.AddReference(host, &host.Datastore, st.Ref)
	dss := simulator.Map.Get(h.DssRef).(*simulator.HostDatastoreSystem)
	simulator.Map.AddReference(dss, &dss.Datastore, st.Ref)
	cluster := simulator.Map.Get(l.clusterRef).(*simulator.ClusterComputeResource)
	simulator.Map.AddReference(cluster, &cluster.Datastore, st.Ref)
	l.publishDatastore(st)
	l.publishHost(h)
}

// unmountDatastore removes h's mount of ds; the datastore leaves the inventory when no
// host mounts it any more (l.mu held).
func (l *Lab) unmountDatastore(st *dsState, h *hostState) {
	delete(st.Mounts, h.Name)
	host := simulator.Map.Get(h.Ref).(*simulator.HostSystem)
	simulator.Map.RemoveReference(host, &host.Datastore, st.Ref)
	dss := simulator.Map.Get(h.DssRef).(*simulator.HostDatastoreSystem)
	simulator.Map.RemoveReference(dss, &dss.Datastore, st.Ref)
	if len(st.Mounts) == 0 {
		l.removeDatastoreObject(st)
	} else {
		l.publishDatastore(st)
	}
	l.publishHost(h)
}

func (l *Lab) removeDatastoreObject(st *dsState) {
	delete(l.datastores, st.Ref.Value)
	cluster := simulator.Map.Get(l.clusterRef).(*simulator.ClusterComputeResource)
	simulator.Map.RemoveReference(cluster, &cluster.Datastore, st.Ref)
	dc := simulator.Map.Get(l.dcRef).(*simulator.Datacenter)
	simulator.Map.RemoveReference(dc, &dc.Datastore, st.Ref)
	folder := simulator.Map.Get(l.dsFolderRef).(*simulator.Folder)
	simulator.Map.RemoveReference(folder, &folder.ChildEntity, st.Ref)
	if obj, ok := simulator.Map.Get(st.Ref).(*simulator.Datastore); ok {
		simulator.Map.Remove(obj.Browser)
	}
	simulator.Map.Remove(st.Ref)
}

// vmsOnDatastore returns the registered VMs with files on ds (their .vmx or any disk),
// optionally only those registered on host h (l.mu held).
func (l *Lab) vmsOnDatastore(st *dsState, h *hostState) []*vmState {
	var out []*vmState
	for _, e := range simulator.Map.All("VirtualMachine") {
		v, vm := l.vmFor(e.Reference())
		if v == nil || vm == nil {
			continue
		}
		if !(v.Datastore == st.Ref.Value || hasDiskOn(vm, st)) || (h != nil && v.hostName(l) != h.Name) {
			continue
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name() < out[j].name() })
	return out
}

// hasDiskOn reports whether one of vm's current disks is a file on st (vm.Datastore is not
// used: the simulator does not drop a datastore from it when the disk goes).
func hasDiskOn(vm *simulator.VirtualMachine, st *dsState) bool {
	if vm.Config == nil {
		return false
	}
	for _, d := range vm.Config.Hardware.Device {
		disk, ok := d.(*types.VirtualDisk)
		if !ok || disk.Backing == nil {
			continue
		}
		b, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		info := b.GetVirtualDeviceFileBackingInfo()
		if info.Datastore != nil && info.Datastore.Value == st.Ref.Value {
			return true
		}
		var p object.DatastorePath
		if p.FromString(info.FileName) && p.Datastore == st.Name {
			return true
		}
	}
	return false
}
