package main

// Virtual disks as ESXi reads them from a .vmx: relative names in the VM's folder,
// absolute /vmfs/volumes/<id>/... paths on whichever datastore has that volume id, and raw
// device mappings (a mapping descriptor naming a LUN). Power-on opens every disk (and the
// LUN of every RDM) and records it when a VM that does not live on production storage
// opens production data.
//
// The simulator only knows flat disks on datastores its host mounts: a disk it cannot
// handle (an RDM, a path no datastore resolves, a datastore its host does not mount) is
// shown to it as a flat placeholder (the VM's .vmx) while it works on the VM, and given
// its real backing back afterwards (maskSpecialDisks).

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

const devicePrefix = "/vmfs/devices/disks/"

// diskFile is a disk file named in a .vmx, resolved to a datastore path when it can be.
type diskFile struct {
	Path string   // "[datastore] dir/file.vmdk", or the raw name when nothing resolves it
	DS   *dsState // nil when unresolved
	Rel  string   // the path inside DS
}

func (f diskFile) local() string {
	if f.DS == nil {
		return ""
	}
	return filepath.Join(f.DS.ContentDir, path.Clean("/"+f.Rel))
}

// datastoreByVolumeID returns the datastore whose /vmfs/volumes id is id (l.mu held).
func (l *Lab) datastoreByVolumeID(id string) *dsState {
	for _, id2 := range sortedKeys(l.datastores) {
		if ds := l.datastores[id2]; ds.volumeID() == id {
			return ds
		}
	}
	return nil
}

// resolveDiskName resolves a .vmx disk name: relative to the .vmx's folder on vmxDs, a
// datastore path, or /vmfs/volumes/<volume id>/<path> on the datastore with that id
// (whatever its name); anything else stays as the raw name (l.mu held).
func (l *Lab) resolveDiskName(vmxDs *dsState, vmDir, name string) diskFile {
	var p object.DatastorePath
	switch {
	case strings.HasPrefix(name, "["):
		if p.FromString(name) {
			if ds := l.datastoreByName(p.Datastore); ds != nil {
				return diskFile{Path: name, DS: ds, Rel: p.Path}
			}
		}
		return diskFile{Path: name}
	case strings.HasPrefix(name, "/vmfs/volumes/"):
		rest := strings.TrimPrefix(name, "/vmfs/volumes/")
		id, rel, ok := strings.Cut(rest, "/")
		if ds := l.datastoreByVolumeID(id); ok && ds != nil && rel != "" {
			return diskFile{Path: fmt.Sprintf("[%s] %s", ds.Name, rel), DS: ds, Rel: rel}
		}
		return diskFile{Path: name}
	case strings.HasPrefix(name, "/"):
		return diskFile{Path: name}
	}
	rel := path.Join(vmDir, name)
	return diskFile{Path: fmt.Sprintf("[%s] %s", vmxDs.Name, rel), DS: vmxDs, Rel: rel}
}

// fileOf resolves a backing's datastore path to a lab datastore (l.mu held).
func (l *Lab) fileOf(name string) diskFile {
	var p object.DatastorePath
	if p.FromString(name) {
		if ds := l.datastoreByName(p.Datastore); ds != nil {
			return diskFile{Path: name, DS: ds, Rel: p.Path}
		}
	}
	return diskFile{Path: name}
}

// vmdkDescriptor is what the lab reads from a disk descriptor.
type vmdkDescriptor struct {
	CreateType string
	Extents    []string // extent file names, relative to the descriptor's folder
	LUN        string   // ddb.sr-lab.lun: the device an RDM maps
	SizeKB     int64
}

var extentLine = regexp.MustCompile(`^(RW|RDONLY|NOACCESS)\s+(\d+)\s+\S+\s+"([^"]+)"`)

// readDescriptor parses the text descriptor at file (nil, err when it cannot be read; an
// empty or binary file gives an empty descriptor).
func readDescriptor(file string) (*vmdkDescriptor, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d := &vmdkDescriptor{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 64*1024)
	for n := 0; sc.Scan() && n < 200; n++ {
		line := strings.TrimSpace(sc.Text())
		if m := extentLine.FindStringSubmatch(line); m != nil {
			d.Extents = append(d.Extents, m[3])
			var sectors int64
			fmt.Sscan(m[2], &sectors)
			d.SizeKB += sectors / 2
			continue
		}
		if k, v, ok := parseVmxLine(line); ok {
			switch strings.ToLower(k) {
			case "createtype":
				d.CreateType = v
			case "ddb.sr-lab.lun":
				d.LUN = strings.ToLower(v)
			}
		}
	}
	return d, nil
}

// rdmCompatibility returns the compatibility mode of an RDM descriptor's createType ("" for
// a disk that is no raw device mapping).
func rdmCompatibility(createType string) string {
	switch createType {
	case "vmfsPassthroughRawDeviceMap":
		return string(types.VirtualDiskCompatibilityModePhysicalMode)
	case "vmfsRawDeviceMap":
		return string(types.VirtualDiskCompatibilityModeVirtualMode)
	}
	return ""
}

// diskBacking returns the backing ESXi gives a disk file named in a .vmx, and its size
// (0 when unknown) (l.mu held).
func (l *Lab) diskBacking(f diskFile) (types.BaseVirtualDeviceBackingInfo, int64) {
	file := types.VirtualDeviceFileBackingInfo{FileName: f.Path}
	if f.DS != nil {
		ref := f.DS.Ref
		file.Datastore = &ref
	}
	var desc *vmdkDescriptor
	if f.DS != nil {
		desc, _ = readDescriptor(f.local())
	}
	if desc != nil && desc.LUN != "" {
		if mode := rdmCompatibility(desc.CreateType); mode != "" {
			model := ""
			if ref := l.findLun(desc.LUN); ref != nil {
				model = ref.Lun.Model
			}
			diskMode := string(types.VirtualDiskModeIndependent_persistent)
			if mode == string(types.VirtualDiskCompatibilityModeVirtualMode) {
				diskMode = string(types.VirtualDiskModePersistent)
			}
			return &types.VirtualDiskRawDiskMappingVer1BackingInfo{
				VirtualDeviceFileBackingInfo: file,
				LunUuid:                      scsiLunUUID(desc.LUN, model),
				DeviceName:                   devicePrefix + desc.LUN,
				CompatibilityMode:            mode,
				DiskMode:                     diskMode,
			}, desc.SizeKB
		}
	}
	size := int64(0)
	if desc != nil {
		size = desc.SizeKB
	}
	return &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: file,
		DiskMode:                     string(types.VirtualDiskModePersistent),
		ThinProvisioned:              types.NewBool(true),
	}, size
}

// rdmDevice returns the naa an RDM backing maps ("" for any other backing).
func rdmDevice(b types.BaseVirtualDeviceBackingInfo) string {
	if r, ok := b.(*types.VirtualDiskRawDiskMappingVer1BackingInfo); ok {
		return strings.TrimPrefix(r.DeviceName, devicePrefix)
	}
	return ""
}

// rdmUser returns a VM registered on h with a raw device mapping of naa (l.mu held).
func (l *Lab) rdmUser(h *hostState, naa string) *vmState {
	for _, id := range sortedKeys(l.vms) {
		v := l.vms[id]
		vm := v.obj()
		if vm == nil || vm.Config == nil || v.hostName(l) != h.Name {
			continue
		}
		for _, d := range vm.Config.Hardware.Device {
			if disk, ok := d.(*types.VirtualDisk); ok && rdmDevice(disk.Backing) == naa {
				return v
			}
		}
	}
	return nil
}

// ---- keeping the simulator to the disks it can handle ---------------------------------------

// simulatorCanHandle reports whether the simulator can work with a VM's disk backing b:
// a flat disk on a datastore the VM's host mounts (hs).
func simulatorCanHandle(b types.BaseVirtualDeviceBackingInfo, hs *simulator.HostSystem) bool {
	flat, ok := b.(*types.VirtualDiskFlatVer2BackingInfo)
	if !ok {
		return false
	}
	var p object.DatastorePath
	return p.FromString(flat.FileName) && hs != nil && simulator.Map.FindByName(p.Datastore, hs.Datastore) != nil
}

// simulatorFindsFiles reports whether the simulator accepts f as an existing disk: it
// looks for the descriptor's "-flat" companion, else the descriptor, and stops at the first
// one missing.
func simulatorFindsFiles(f diskFile) bool {
	if f.DS == nil {
		return false
	}
	_, err := os.Stat(strings.Replace(f.local(), ".vmdk", "-flat.vmdk", 1))
	return err == nil
}

// placeholder returns the flat backing the simulator sees instead of a disk it cannot
// handle: the VM's .vmx, which always exists (the simulator checks that a disk's file, or
// its "-flat" companion, exists).
func placeholder(vm *simulator.VirtualMachine) *types.VirtualDiskFlatVer2BackingInfo {
	return &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{FileName: vm.Config.Files.VmPathName},
		DiskMode:                     string(types.VirtualDiskModePersistent),
		ThinProvisioned:              types.NewBool(true),
	}
}

func vmHost(vm *simulator.VirtualMachine) *simulator.HostSystem {
	if vm.Runtime.Host == nil {
		return nil
	}
	hs, _ := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem)
	return hs
}

type maskedDisk struct {
	disk *types.VirtualDisk
	real types.BaseVirtualDeviceBackingInfo
	ph   *types.VirtualDiskFlatVer2BackingInfo
}

// maskSpecialDisks shows the simulator a placeholder for each disk of vm it cannot handle,
// and for the disks spec adds or edits with such a backing; spec's removals of such disks
// do not let the simulator delete a file. The returned function (call it with vm's lock
// still held, after the simulator's work) puts the real backings back and, if ok, deletes
// the files of removed special disks the spec asked to destroy (vm's lock held).
func (l *Lab) maskSpecialDisks(vm *simulator.VirtualMachine, spec *types.VirtualMachineConfigSpec) func(ok bool) {
	hs := vmHost(vm)
	var masked []maskedDisk
	for _, d := range vm.Config.Hardware.Device {
		disk, isDisk := d.(*types.VirtualDisk)
		if !isDisk || disk.Backing == nil || simulatorCanHandle(disk.Backing, hs) {
			continue
		}
		ph := placeholder(vm)
		masked = append(masked, maskedDisk{disk, disk.Backing, ph})
		disk.Backing = ph
	}
	var destroy []types.BaseVirtualDeviceBackingInfo
	if spec != nil {
		for _, change := range spec.DeviceChange {
			ds := change.GetVirtualDeviceConfigSpec()
			disk, isDisk := ds.Device.(*types.VirtualDisk)
			if !isDisk || disk.Backing == nil || simulatorCanHandle(disk.Backing, hs) {
				continue
			}
			if ds.Operation == types.VirtualDeviceConfigSpecOperationRemove {
				if ds.FileOperation == types.VirtualDeviceConfigSpecFileOperationDestroy {
					destroy = append(destroy, disk.Backing)
				}
				ds.FileOperation = ""
				continue
			}
			ph := placeholder(vm)
			masked = append(masked, maskedDisk{disk, disk.Backing, ph})
			disk.Backing = ph
		}
	}
	return func(ok bool) {
		for _, m := range masked {
			if b, same := m.disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo); same && b == m.ph {
				m.disk.Backing = m.real
			}
		}
		if !ok {
			return
		}
		for _, b := range destroy {
			if fb, isFile := b.(types.BaseVirtualDeviceFileBackingInfo); isFile {
				l.deleteDiskFiles(l.fileOf(fb.GetVirtualDeviceFileBackingInfo().FileName))
			}
		}
	}
}

// diskFiles returns the local files of a disk: its descriptor and the extents it names
// (for a descriptor naming none, a "-flat" file beside it, if any).
func diskFiles(f diskFile) ([]string, error) {
	desc, err := readDescriptor(f.local())
	if err != nil {
		return nil, err
	}
	files := []string{f.local()}
	dir := filepath.Dir(f.local())
	for _, e := range desc.Extents {
		files = append(files, filepath.Join(dir, filepath.Base(e)))
	}
	if len(desc.Extents) == 0 {
		flat := strings.TrimSuffix(f.local(), ".vmdk") + "-flat.vmdk"
		if _, err := os.Stat(flat); err == nil {
			files = append(files, flat)
		}
	}
	return files, nil
}

func (l *Lab) deleteDiskFiles(f diskFile) {
	if f.DS == nil {
		return
	}
	files, err := diskFiles(f)
	if err != nil {
		return
	}
	for _, file := range files {
		_ = os.Remove(file)
	}
}

// ---- power-on opens the disks -----------------------------------------------------------------

func fileNotFound(name, why string) *soap.Fault {
	msg := fmt.Sprintf("File %s was not found", name)
	if why != "" {
		msg += ": " + why
	}
	return fault(msg, &types.FileNotFound{FileFault: types.FileFault{File: name}})
}

// openFile checks that host h can open the disk file f and the extents its descriptor
// names (l.mu held).
func (l *Lab) openFile(f diskFile, h *hostState) *soap.Fault {
	if f.DS == nil {
		return fileNotFound(f.Path, "")
	}
	if m := f.DS.Mounts[h.Name]; m == nil || !m.Accessible {
		return fileNotFound(f.Path, fmt.Sprintf("datastore %s is not accessible from host %s", f.DS.Name, h.Name))
	}
	files, err := diskFiles(f)
	if err != nil {
		return fileNotFound(f.Path, "")
	}
	for _, file := range files[1:] {
		if _, err := os.Stat(file); err != nil {
			name := fmt.Sprintf("[%s] %s", f.DS.Name, path.Join(path.Dir(f.Rel), filepath.Base(file)))
			return fileNotFound(name, "")
		}
	}
	return nil
}

// openDisks does what power-on does with v's disks on host h: every disk file (and every
// RDM's LUN) must be reachable, else FileNotFound. It returns the production_file_opened
// events the power-on will cause: v's .vmx is not on production storage, and a disk is on
// a production datastore or maps a production LUN (l.mu held).
func (l *Lab) openDisks(v *vmState, vm *simulator.VirtualMachine, h *hostState) ([]StorageEvent, *soap.Fault) {
	vmxDs := l.datastores[v.Datastore]
	production := vmxDs != nil && l.isProduction(vmxDs)
	var events []StorageEvent
	for _, d := range vm.Config.Hardware.Device {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		f := l.fileOf(fb.GetVirtualDeviceFileBackingInfo().FileName)
		if fault := l.openFile(f, h); fault != nil {
			return nil, fault
		}
		if naa := rdmDevice(disk.Backing); naa != "" {
			dev := h.Devices[naa]
			if dev == nil || !dev.Attached || dev.Lost || !l.hasPath(h, naa) {
				return nil, fileNotFound(f.Path, fmt.Sprintf("it maps LUN %s, which host %s does not see", naa, h.Name))
			}
			if ref := l.findLun(naa); !production && ref != nil && ref.Lun.Production {
				events = append(events, StorageEvent{Kind: "production_file_opened", Host: h.Name, VM: vm.Name,
					NAA: naa, Detail: fmt.Sprintf("raw device mapping %s of production LUN %s (%s)", f.Path, naa, ref.Lun.Name)})
			}
			continue
		}
		if !production && l.isProduction(f.DS) {
			events = append(events, StorageEvent{Kind: "production_file_opened", Host: h.Name, VM: vm.Name,
				Datastore: f.DS.Name, Detail: "disk " + f.Path})
		}
	}
	return events, nil
}

// isProduction reports whether the fabric marks ds's LUN or export production (l.mu held).
func (l *Lab) isProduction(ds *dsState) bool {
	if ds.Kind == "vmfs" {
		ref := l.findLun(ds.NAA)
		return ref != nil && ref.Lun.Production
	}
	for _, name := range l.arrayNames() {
		for _, e := range l.fabrics[name].NfsExports {
			if cleanNfsPath(e.Path) == ds.Path && contains(e.Servers, ds.Server) {
				return e.Production
			}
		}
	}
	return false
}
