package main

// Each ESXi host's storage stack: adapters, iSCSI targets, the devices found by the last
// rescan of each adapter, VMFS discovery, unresolved (snapshot) volumes, and the
// all-paths-down check that runs whenever a fabric, a host's targets or its adapters'
// view (a rescan) change.

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type target struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
	IQN     string `json:"iqn"`
	Method  string `json:"discovery_method"`
}

type sendTarget struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
}

type lunPath struct {
	Lun     int32
	Target  string // target IQN or target WWPN
	Address string // portal address (iSCSI)
}

type hba struct {
	Device string
	Kind   string // "iscsi", "fc" or "local"
	IQN    string
	WWPN   string // canonical 16 hex digits
	WWNN   string
	Static []target
	Send   []sendTarget
	Paths  map[string]lunPath // naa -> path found by the last rescan of this adapter
	Bus    int32
}

type device struct {
	NAA        string `json:"naa"`
	UUID       string `json:"uuid"`
	Array      string `json:"array"`
	Name       string `json:"array_object"`
	Vendor     string `json:"vendor"`
	Model      string `json:"model"`
	SizeMB     int64  `json:"size_mb"`
	ContentDir string `json:"content_dir"`
	Attached   bool   `json:"attached"`
	Lost       bool   `json:"lost"` // no path left, kept because it was in use
}

type hostState struct {
	Name      string
	VmkIP     string
	Ref       types.ManagedObjectReference
	StorRef   types.ManagedObjectReference
	DssRef    types.ManagedObjectReference
	HBAs      []*hba
	Devices   map[string]*device // naa -> device
	Unmounted map[string]bool    // VMFS uuids unmounted by a user: not auto-mounted again
}

func (h *hostState) hba(device string) *hba {
	for _, a := range h.HBAs {
		if a.Device == device {
			return a
		}
	}
	return nil
}

// ---- VMFS header (lab/vmfs.py is the reference) ---------------------------------------------

const vmfsHeaderName = ".vh.sf"
const vmfsHeaderFormat = "sr-lab-vmfs/1"

type vmfsHeader struct {
	Format string `json:"format"`
	UUID   string `json:"uuid"`
	Label  string `json:"label"`
	NAA    string `json:"naa"`
}

func readVmfsHeader(dir string) *vmfsHeader {
	data, err := os.ReadFile(filepath.Join(dir, vmfsHeaderName))
	if err != nil {
		return nil
	}
	var h vmfsHeader
	if json.Unmarshal(data, &h) != nil || h.Format != vmfsHeaderFormat {
		return nil
	}
	return &h
}

func writeVmfsHeader(dir string, h vmfsHeader) error {
	h.Format = vmfsHeaderFormat
	data, _ := json.Marshal(h)
	tmp := filepath.Join(dir, vmfsHeaderName+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, vmfsHeaderName))
}

// ---- identities ------------------------------------------------------------------------------

// scsiLunUUID derives the ScsiLun.uuid ESXi reports (not the naa name) for a device.
func scsiLunUUID(naa, model string) string {
	m := (model + "      ")[:6]
	return "0200000000" + strings.TrimPrefix(naa, "naa.") + hex.EncodeToString([]byte(m))
}

func wwnToInt(hexwwn string) int64 {
	v, _ := strconv.ParseUint(hexwwn, 16, 64)
	return int64(v)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := readRandom(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// newVmfsUUID returns a VMFS uuid in ESXi's format, e.g. 5f1b2c3d-aabbccdd-eeff-001122334455.
func newVmfsUUID() string {
	r := randomHex(16)
	return r[0:8] + "-" + r[8:16] + "-" + r[16:20] + "-" + r[20:32]
}

// nasVolumeID is the /vmfs/volumes id of an NFS mount (lab/vmx.py has the same rule).
func nasVolumeID(server, path string) string {
	sum := sha1.Sum([]byte("nfs:" + server + ":" + cleanNfsPath(path)))
	h := hex.EncodeToString(sum[:])
	return h[0:8] + "-" + h[8:16]
}

// ---- fabric ----------------------------------------------------------------------------------

// refreshFabrics fetches every array's fabric (l.mu held). An array that does not answer
// is down: strict (at boot) that is an error; otherwise it contributes nothing (its LUNs
// and exports vanish from every host's view) and the call goes on, as a rescan on ESXi
// does when a storage array is unreachable.
func (l *Lab) refreshFabrics(strict bool) error {
	for _, a := range l.cfg.Arrays {
		f, err := l.fc.fetch(a.LabURL)
		if err != nil {
			if strict {
				return fmt.Errorf("array %s: %w", a.Name, err)
			}
			l.markArrayDown(a.Name, err.Error())
			continue
		}
		if _, down := l.arraysDown[a.Name]; down {
			logf("array %s is reachable again (fabric generation %d)", a.Name, f.Generation)
			delete(l.arraysDown, a.Name)
		}
		l.fabrics[a.Name] = f
	}
	return nil
}

// markArrayDown replaces the fabric of an unreachable array by an empty one that keeps its
// last known generation, so that the array's next push (when it is back) is accepted
// (l.mu held). The caller checks the paths.
func (l *Lab) markArrayDown(name, why string) {
	if _, down := l.arraysDown[name]; !down {
		logf("array %s is down: %s", name, why)
	}
	l.arraysDown[name] = why
	var gen int64
	if cur := l.fabrics[name]; cur != nil {
		gen = cur.Generation
	}
	l.fabrics[name] = &Fabric{Array: name, Generation: gen}
}

func (l *Lab) arrayNames() []string {
	names := make([]string, 0, len(l.fabrics))
	for n := range l.fabrics {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

type lunRef struct {
	Array string
	Lun   *FabricLun
}

// currentPaths returns what adapter a could see through the current fabric and its
// current targets: naa -> path. (A rescan copies this into a.Paths.)
func (l *Lab) currentPaths(a *hba) map[string]lunPath {
	paths := map[string]lunPath{}
	for _, name := range l.arrayNames() {
		f := l.fabrics[name]
		for i := range f.Luns {
			lun := &f.Luns[i]
			for _, e := range lun.Exports {
				switch {
				case a.Kind == "iscsi" && e.Protocol == "iscsi" && e.Initiator == a.IQN:
					for _, t := range lun.IscsiTargets {
						if hasStaticTarget(a, t) {
							paths[lun.NAA] = lunPath{Lun: e.Lun, Target: t.IQN, Address: t.Address}
							break
						}
					}
				case a.Kind == "fc" && e.Protocol == "fc" && e.Initiator == a.WWPN:
					tgt := ""
					if len(lun.FcTargets) > 0 {
						tgt = lun.FcTargets[0]
					}
					paths[lun.NAA] = lunPath{Lun: e.Lun, Target: tgt}
				}
			}
		}
	}
	return paths
}

func port(p int32) int32 {
	if p == 0 {
		return 3260
	}
	return p
}

func hasStaticTarget(a *hba, t IscsiTarget) bool {
	for _, s := range a.Static {
		if s.Address == t.Address && port(s.Port) == port(t.Port) && strings.EqualFold(s.IQN, t.IQN) {
			return true
		}
	}
	return false
}

func (l *Lab) findLun(naa string) *lunRef {
	for _, name := range l.arrayNames() {
		f := l.fabrics[name]
		for i := range f.Luns {
			if f.Luns[i].NAA == naa {
				return &lunRef{Array: name, Lun: &f.Luns[i]}
			}
		}
	}
	return nil
}

// ---- rescans ---------------------------------------------------------------------------------

// rescanAdapter does what ESXi does for RescanHba: discover send targets, find devices
// through this adapter, forget devices it no longer sees, then probe for VMFS (l.mu held).
func (l *Lab) rescanAdapter(h *hostState, a *hba) {
	if a.Kind == "iscsi" {
		l.discoverSendTargets(a)
	}
	old := a.Paths
	a.Paths = l.currentPaths(a)
	for naa, p := range old {
		// the dead path of a device in use stays (ESXi keeps probing it): the device comes
		// back when the array serves it again, without another rescan
		if _, ok := a.Paths[naa]; !ok && l.deviceInUse(h, naa) {
			a.Paths[naa] = p
		}
	}
	l.reconcileDevices(h)
	l.discoverVmfs(h)
}

// deviceInUse reports whether device naa carries a VMFS datastore mounted on h or is the
// raw device of an RDM of a VM registered on h (l.mu held).
func (l *Lab) deviceInUse(h *hostState, naa string) bool {
	return l.vmfsMountedOn(h, naa) != nil || l.rdmUser(h, naa) != nil
}

func (l *Lab) discoverSendTargets(a *hba) {
	for _, st := range a.Send {
		for _, name := range l.arrayNames() {
			for _, lun := range l.fabrics[name].Luns {
				for _, t := range lun.IscsiTargets {
					if t.Address == st.Address && port(t.Port) == port(st.Port) && !hasStaticTarget(a, t) {
						a.Static = append(a.Static, target{Address: t.Address, Port: port(t.Port), IQN: t.IQN, Method: "sendTargetMethod"})
					}
				}
			}
		}
	}
}

// reconcileDevices makes h.Devices the union of the adapters' paths (l.mu held).
func (l *Lab) reconcileDevices(h *hostState) {
	seen := map[string]bool{}
	for _, a := range h.HBAs {
		for naa := range a.Paths {
			seen[naa] = true
			if d := h.Devices[naa]; d != nil {
				d.Lost = false
				continue
			}
			ref := l.findLun(naa)
			if ref == nil {
				continue
			}
			h.Devices[naa] = &device{
				NAA: naa, UUID: scsiLunUUID(naa, ref.Lun.Model), Array: ref.Array, Name: ref.Lun.Name,
				Vendor: ref.Lun.Vendor, Model: ref.Lun.Model, SizeMB: ref.Lun.SizeMB,
				ContentDir: ref.Lun.ContentDir, Attached: true,
			}
		}
	}
	for naa, d := range h.Devices {
		if seen[naa] {
			continue
		}
		if l.deviceInUse(h, naa) {
			d.Lost = true // a dead device stays while a datastore or an RDM uses it
			continue
		}
		delete(h.Devices, naa)
		for uuid := range h.Unmounted {
			if hdr := readVmfsHeader(d.ContentDir); hdr != nil && hdr.UUID == uuid {
				delete(h.Unmounted, uuid)
			}
		}
	}
}

func (l *Lab) hasPath(h *hostState, naa string) bool {
	for _, a := range h.HBAs {
		if _, ok := a.Paths[naa]; ok {
			return true
		}
	}
	return false
}

// discoverVmfs mounts every resolved VMFS volume the host sees that a user did not
// unmount; unresolved copies are left for QueryUnresolvedVmfsVolume (l.mu held).
func (l *Lab) discoverVmfs(h *hostState) {
	naas := make([]string, 0, len(h.Devices))
	for naa := range h.Devices {
		naas = append(naas, naa)
	}
	sort.Strings(naas)
	for _, naa := range naas {
		d := h.Devices[naa]
		if !d.Attached || d.Lost || !l.hasPath(h, naa) {
			continue
		}
		hdr := readVmfsHeader(d.ContentDir)
		if hdr == nil || hdr.NAA != naa || h.Unmounted[hdr.UUID] {
			continue
		}
		if ds := l.vmfsByUUID(hdr.UUID); ds != nil {
			if m := ds.Mounts[h.Name]; m == nil {
				l.mountDatastore(ds, h)
			}
			continue
		}
		ds := l.newVmfsDatastore(hdr, d)
		l.mountDatastore(ds, h)
	}
}

// unresolvedVolumes lists the VMFS copies the host sees but will not mount (l.mu held).
func (l *Lab) unresolvedVolumes(h *hostState) []types.HostUnresolvedVmfsVolume {
	type found struct {
		d   *device
		hdr *vmfsHeader
	}
	var all []found
	byUUID := map[string]int{}
	for _, d := range h.Devices {
		if !d.Attached || d.Lost || !l.hasPath(h, d.NAA) {
			continue
		}
		hdr := readVmfsHeader(d.ContentDir)
		if hdr == nil || hdr.NAA == d.NAA {
			continue
		}
		all = append(all, found{d, hdr})
		byUUID[hdr.UUID]++
	}
	sort.Slice(all, func(i, j int) bool { return all[i].d.NAA < all[j].d.NAA })
	vols := []types.HostUnresolvedVmfsVolume{}
	for _, f := range all {
		reason := "diskIdMismatch"
		if ds := l.vmfsByUUID(f.hdr.UUID); ds != nil && ds.Mounts[h.Name] != nil {
			reason = "uuidConflict"
		}
		blocks := int32(f.d.SizeMB) // 1 MB VMFS blocks
		vols = append(vols, types.HostUnresolvedVmfsVolume{
			Extent: []types.HostUnresolvedVmfsExtent{{
				Device:       types.HostScsiDiskPartition{DiskName: f.d.NAA, Partition: 1},
				DevicePath:   "/vmfs/devices/disks/" + f.d.NAA + ":1",
				VmfsUuid:     f.hdr.UUID,
				IsHeadExtent: true,
				Ordinal:      0,
				StartBlock:   0,
				EndBlock:     blocks - 1,
				Reason:       reason,
			}},
			VmfsLabel:   f.hdr.Label,
			VmfsUuid:    f.hdr.UUID,
			TotalBlocks: blocks,
			ResolveStatus: types.HostUnresolvedVmfsVolumeResolveStatus{
				Resolvable:        true,
				IncompleteExtents: types.NewBool(false),
				MultipleCopies:    types.NewBool(byUUID[f.hdr.UUID] > 1),
			},
		})
	}
	return vols
}

// ---- all paths down --------------------------------------------------------------------------

// checkPaths re-evaluates, for every host, whether each device and NFS mount still has a
// path through the current fabric and targets, and records what broke (l.mu held).
func (l *Lab) checkPaths() {
	for _, h := range l.hosts {
		changed := false
		for naa, d := range h.Devices {
			alive := false
			for _, a := range h.HBAs {
				if _, ok := a.Paths[naa]; !ok {
					continue // this adapter never found it
				}
				if _, ok := l.currentPaths(a)[naa]; ok {
					alive = true
				}
			}
			ds := l.vmfsMountedOn(h, naa)
			switch {
			case ds != nil:
				m := ds.Mounts[h.Name]
				if !alive && m.Accessible {
					m.Accessible, m.Reason = false, "AllPathsDown_Start"
					l.event("apd", h.Name, ds.Name, naa, "LUN unpresented while the VMFS datastore was mounted")
					changed = true
				} else if alive && !m.Accessible {
					m.Accessible, m.Reason = true, ""
					l.event("apd_exit", h.Name, ds.Name, naa, "paths restored")
					changed = true
				}
				if d.Lost != !alive {
					d.Lost = !alive // the device stays, dead, while the datastore is mounted
					changed = true
				}
				l.publishDatastore(ds)
			case !alive && d.Attached && !d.Lost:
				d.Lost = true
				l.event("device_lost_while_attached", h.Name, "", naa, "LUN unpresented before the device was detached")
				changed = true
			case alive && d.Lost:
				d.Lost = false
				changed = true
			}
		}
		for _, ds := range l.datastores {
			m := ds.Mounts[h.Name]
			if ds.Kind != "nfs" || m == nil {
				continue
			}
			_, ok := l.nfsExportFor(h, ds.Server, ds.Path)
			if !ok && m.Accessible {
				m.Accessible, m.Reason = false, "AllPathsDown_Start"
				l.event("apd", h.Name, ds.Name, "", "NFS export withdrawn while mounted")
				changed = true
			} else if ok && !m.Accessible {
				m.Accessible, m.Reason = true, ""
				l.event("apd_exit", h.Name, ds.Name, "", "NFS export restored")
				changed = true
			}
			l.publishDatastore(ds)
		}
		if changed {
			l.publishHost(h)
		}
	}
	l.syncConnections() // a VM whose .vmx went APD is inaccessible, and back on apd_exit
}

// nfsExportFor finds the export server:path and whether it admits h with rw and root.
func (l *Lab) nfsExportFor(h *hostState, server, path string) (*NfsExport, bool) {
	path = cleanNfsPath(path)
	for _, name := range l.arrayNames() {
		f := l.fabrics[name]
		for i := range f.NfsExports {
			e := &f.NfsExports[i]
			if cleanNfsPath(e.Path) != path || !contains(e.Servers, server) {
				continue
			}
			for _, r := range e.Rules {
				if ruleMatches(r.Match, h.VmkIP) {
					return e, r.RW && r.Root // the first matching rule decides
				}
			}
			return e, false
		}
	}
	return nil, false
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// ---- publishing to the simulator's objects ---------------------------------------------------

// publishHost writes the host's adapters, devices, topology and mounts into the
// HostStorageSystem and HostSystem objects that clients read (l.mu held).
func (l *Lab) publishHost(h *hostState) {
	info := &types.HostStorageDeviceInfo{SoftwareInternetScsiEnabled: true}
	topo := &types.HostScsiTopology{}
	multipath := &types.HostMultipathInfo{}

	for _, a := range h.HBAs {
		key := ""
		switch a.Kind {
		case "iscsi":
			key = "key-vim.host.InternetScsiHba-" + a.Device
			hb := &types.HostInternetScsiHba{
				HostHostBusAdapter: types.HostHostBusAdapter{
					Key: key, Device: a.Device, Bus: a.Bus, Status: "online",
					Model: "iSCSI Software Adapter", Driver: "iscsi_vmk", StorageProtocol: "scsi",
				},
				IsSoftwareBased: true,
				CanBeDisabled:   types.NewBool(true),
				DiscoveryCapabilities: types.HostInternetScsiHbaDiscoveryCapabilities{
					StaticTargetDiscoverySettable: false, SendTargetsDiscoverySettable: false,
				},
				DiscoveryProperties: types.HostInternetScsiHbaDiscoveryProperties{
					StaticTargetDiscoveryEnabled: true, SendTargetsDiscoveryEnabled: true,
				},
				AuthenticationCapabilities: types.HostInternetScsiHbaAuthenticationCapabilities{ChapAuthSettable: true},
				AuthenticationProperties:   types.HostInternetScsiHbaAuthenticationProperties{ChapAuthEnabled: false},
				IpCapabilities:             types.HostInternetScsiHbaIPCapabilities{},
				IpProperties:               types.HostInternetScsiHbaIPProperties{DhcpConfigurationEnabled: false},
				IScsiName:                  a.IQN,
			}
			for _, t := range a.Static {
				hb.ConfiguredStaticTarget = append(hb.ConfiguredStaticTarget, types.HostInternetScsiHbaStaticTarget{
					Address: t.Address, Port: port(t.Port), IScsiName: t.IQN, DiscoveryMethod: t.Method,
					Parent: a.Device,
				})
			}
			for _, t := range a.Send {
				hb.ConfiguredSendTarget = append(hb.ConfiguredSendTarget, types.HostInternetScsiHbaSendTarget{
					Address: t.Address, Port: port(t.Port), Parent: a.Device,
				})
			}
			info.HostBusAdapter = append(info.HostBusAdapter, hb)
		case "fc":
			key = "key-vim.host.FibreChannelHba-" + a.Device
			info.HostBusAdapter = append(info.HostBusAdapter, &types.HostFibreChannelHba{
				HostHostBusAdapter: types.HostHostBusAdapter{
					Key: key, Device: a.Device, Bus: a.Bus, Status: "online",
					Model: "Emulex LightPulse LPe32000 PCIe Fibre Channel Adapter", Driver: "lpfc",
					StorageProtocol: "scsi",
				},
				PortWorldWideName: wwnToInt(a.WWPN), NodeWorldWideName: wwnToInt(a.WWNN),
				PortType: "fabric", Speed: 16,
			})
		default:
			key = "key-vim.host.BlockHba-" + a.Device
			info.HostBusAdapter = append(info.HostBusAdapter, &types.HostBlockHba{
				HostHostBusAdapter: types.HostHostBusAdapter{
					Key: key, Device: a.Device, Bus: a.Bus, Status: "unknown",
					Model: "Lewisburg SATA AHCI Controller", Driver: "vmw_ahci", StorageProtocol: "scsi",
				},
			})
		}
		iface := types.HostScsiTopologyInterface{Key: "key-vim.host.ScsiTopology.Interface-" + a.Device, Adapter: key}
		naas := sortedKeys(a.Paths)
		for i, naa := range naas {
			d := h.Devices[naa]
			if d == nil {
				continue
			}
			p := a.Paths[naa]
			iface.Target = append(iface.Target, types.HostScsiTopologyTarget{
				Key:    fmt.Sprintf("key-vim.host.ScsiTopology.Target-%s:0:%d", a.Device, i),
				Target: int32(i),
				Lun: []types.HostScsiTopologyLun{{
					Key:     fmt.Sprintf("key-vim.host.ScsiTopology.Lun-%s", d.UUID),
					Lun:     p.Lun,
					ScsiLun: "key-vim.host.ScsiDisk-" + d.UUID,
				}},
				Transport: transport(a, p),
			})
		}
		topo.Adapter = append(topo.Adapter, iface)
	}

	for _, naa := range sortedKeys(h.Devices) {
		d := h.Devices[naa]
		state := "ok"
		switch {
		case !d.Attached:
			state = "off"
		case d.Lost:
			state = "lostCommunication"
		}
		proto := "Fibre Channel"
		for _, a := range h.HBAs {
			if _, ok := a.Paths[naa]; ok && a.Kind == "iscsi" {
				proto = "iSCSI"
			}
		}
		key := "key-vim.host.ScsiDisk-" + d.UUID
		info.ScsiLun = append(info.ScsiLun, &types.HostScsiDisk{
			ScsiLun: types.ScsiLun{
				HostDevice:       types.HostDevice{DeviceName: "/vmfs/devices/disks/" + naa, DeviceType: "disk"},
				Key:              key,
				Uuid:             d.UUID,
				CanonicalName:    naa,
				DisplayName:      fmt.Sprintf("%s %s Disk (%s)", d.Vendor, proto, naa),
				LunType:          "disk",
				Vendor:           d.Vendor,
				Model:            d.Model,
				Revision:         "0000",
				ScsiLevel:        6,
				SerialNumber:     "unavailable",
				OperationalState: []string{state},
			},
			Capacity:   types.HostDiskDimensionsLba{BlockSize: 512, Block: d.SizeMB * 2048},
			DevicePath: "/vmfs/devices/disks/" + naa,
			Ssd:        types.NewBool(true),
			LocalDisk:  types.NewBool(false),
		})
		lu := types.HostMultipathInfoLogicalUnit{
			Key:    "key-vim.host.MultipathInfo.LogicalUnit-" + d.UUID,
			Id:     d.UUID,
			Lun:    key,
			Policy: &types.HostMultipathInfoLogicalUnitPolicy{Policy: "VMW_PSP_RR"},
		}
		for _, a := range h.HBAs {
			p, ok := a.Paths[naa]
			if !ok {
				continue
			}
			state := "active"
			if d.Lost {
				state = "dead"
			}
			name := fmt.Sprintf("%s:C0:T0:L%d", a.Device, p.Lun)
			lu.Path = append(lu.Path, types.HostMultipathInfoPath{
				Key:       "key-vim.host.MultipathInfo.Path-" + name,
				Name:      name,
				PathState: state,
				State:     state,
				Adapter:   adapterKey(a),
				Lun:       lu.Key,
				Transport: transport(a, p),
			})
		}
		multipath.Lun = append(multipath.Lun, lu)
	}
	info.ScsiTopology = topo
	info.MultipathInfo = multipath

	fsInfo := &types.HostFileSystemVolumeInfo{VolumeTypeList: []string{"VMFS", "NFS", "NFS41", "vsan", "VVOL", "VFFS", "OTHER", "PMEM"}}
	for _, ds := range l.sortedDatastores() {
		m := ds.Mounts[h.Name]
		if m == nil {
			continue
		}
		fsInfo.MountInfo = append(fsInfo.MountInfo, types.HostFileSystemMountInfo{
			MountInfo: types.HostMountInfo{
				Path: ds.mountPath(), AccessMode: "readWrite",
				Mounted: types.NewBool(true), Accessible: types.NewBool(m.Accessible),
				InaccessibleReason: m.Reason,
			},
			Volume: ds.volume(),
		})
	}

	stor := simulator.Map.Get(h.StorRef).(*simulator.HostStorageSystem)
	simulator.Map.WithLock(stor, func() {
		simulator.Map.Update(stor, []types.PropertyChange{
			{Name: "storageDeviceInfo", Val: info},
			{Name: "fileSystemVolumeInfo", Val: *fsInfo},
		})
	})
	host := simulator.Map.Get(h.Ref).(*simulator.HostSystem)
	simulator.Map.WithLock(host, func() {
		simulator.Map.Update(host, []types.PropertyChange{
			{Name: "config.storageDevice", Val: info},
			{Name: "config.fileSystemVolume", Val: fsInfo},
		})
	})
}

func adapterKey(a *hba) string {
	switch a.Kind {
	case "iscsi":
		return "key-vim.host.InternetScsiHba-" + a.Device
	case "fc":
		return "key-vim.host.FibreChannelHba-" + a.Device
	}
	return "key-vim.host.BlockHba-" + a.Device
}

func transport(a *hba, p lunPath) types.BaseHostTargetTransport {
	if a.Kind == "iscsi" {
		return &types.HostInternetScsiTargetTransport{IScsiName: p.Target, Address: []string{p.Address + ":3260"}}
	}
	return &types.HostFibreChannelTargetTransport{PortWorldWideName: wwnToInt(p.Target), NodeWorldWideName: wwnToInt(p.Target)}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func logf(format string, args ...interface{}) {
	log.Printf(format, args...)
}
