package main

// The vSphere storage methods the simulator lacks, with ESXi's semantics and faults.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func fault(msg string, f types.BaseMethodFault) *soap.Fault { return simulator.Fault(msg, f) }

func (l *Lab) registerStorageOverrides(s *soapLayer) {
	s.handle("HostStorageSystem", "RescanHba", l.opRescanHba)
	s.handle("HostStorageSystem", "RescanAllHba", l.opRescanAllHba)
	s.handle("HostStorageSystem", "RescanVmfs", l.opRescanVmfs)
	s.handle("HostStorageSystem", "RefreshStorageSystem", l.opRescanVmfs)
	s.handle("HostStorageSystem", "QueryUnresolvedVmfsVolume", l.opQueryUnresolved)
	s.handle("HostDatastoreSystem", "QueryUnresolvedVmfsVolumes", l.opQueryUnresolved)
	s.handle("HostStorageSystem", "AddInternetScsiStaticTargets", l.opAddStaticTargets)
	s.handle("HostStorageSystem", "RemoveInternetScsiStaticTargets", l.opRemoveStaticTargets)
	s.handle("HostStorageSystem", "AddInternetScsiSendTargets", l.opAddSendTargets)
	s.handle("HostStorageSystem", "RemoveInternetScsiSendTargets", l.opRemoveSendTargets)
	s.handle("HostStorageSystem", "UpdateSoftwareInternetScsiEnabled", l.opUpdateSwIscsi)
	s.handle("HostStorageSystem", "UnmountVmfsVolume", l.opUnmountVmfs)
	s.handle("HostStorageSystem", "MountVmfsVolume", l.opMountVmfs)
	s.handle("HostStorageSystem", "DetachScsiLun", l.opDetachLun)
	s.handle("HostStorageSystem", "AttachScsiLun", l.opAttachLun)
	s.handle("HostDatastoreSystem", "ResignatureUnresolvedVmfsVolume_Task", l.opResignature)
	s.handle("HostDatastoreSystem", "CreateNasDatastore", l.opCreateNas)
	s.handle("HostDatastoreSystem", "RemoveDatastore", l.opRemoveDatastore)
	s.handle("Datastore", "RenameDatastore", l.opRenameDatastore)
	s.handle("Datastore", "Rename_Task", l.opRenameDatastoreTask)
	s.handle("Datastore", "Destroy_Task", l.opDestroyDatastore)
	s.handle("Datastore", "DestroyDatastore", l.opDestroyDatastoreSync)
	s.handle("Datastore", "RefreshDatastore", l.opRefreshDatastore)
}

// hostOf returns the host that owns the storage/datastore system c is called on.
func (l *Lab) hostOf(c *callCtx) (*hostState, *soap.Fault) {
	if h := l.hostBySystem[c.method.This.Value]; h != nil {
		return h, nil
	}
	return nil, fault("managed object not found", &types.ManagedObjectNotFound{Obj: c.method.This})
}

// onHost runs fn, with l.mu held, for the host whose storage/datastore system c is called on.
func (l *Lab) onHost(c *callCtx, fn func(h *hostState) (interface{}, *soap.Fault)) (interface{}, *soap.Fault) {
	h, f := l.hostOf(c)
	if f != nil {
		return nil, f
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return fn(h)
}

// onIscsi is onHost for a method naming the host's software iSCSI adapter.
func (l *Lab) onIscsi(c *callCtx, device string, fn func(h *hostState, a *hba) *soap.Fault) (interface{}, *soap.Fault) {
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		a, f := iscsiAdapter(h, device)
		if f != nil {
			return nil, f
		}
		if f := fn(h, a); f != nil {
			return nil, f
		}
		l.publishHost(h)
		return nil, nil
	})
}

// refreshForRescan fetches the arrays' fabrics before a rescan or a mount; an array that
// is down contributes nothing, and the call succeeds (l.mu held).
func (l *Lab) refreshForRescan() {
	_ = l.refreshFabrics(false)
}

func (l *Lab) opRescanHba(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.RescanHba)
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		a := h.hba(req.HbaDevice)
		if a == nil {
			return nil, fault(fmt.Sprintf("adapter %q not found on host %s", req.HbaDevice, h.Name), &types.NotFound{})
		}
		l.refreshForRescan()
		l.rescanAdapter(h, a)
		l.checkPaths()
		l.publishHost(h)
		return nil, nil
	})
}
func (l *Lab) opRescanAllHba(c *callCtx) (interface{}, *soap.Fault) {
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		l.refreshForRescan()
		for _, a := range h.HBAs {
			l.rescanAdapter(h, a)
		}
		l.checkPaths()
		l.publishHost(h)
		return nil, nil
	})
}
func (l *Lab) opRescanVmfs(c *callCtx) (interface{}, *soap.Fault) {
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		l.discoverVmfs(h)
		l.publishHost(h)
		return nil, nil
	})
}
func (l *Lab) opQueryUnresolved(c *callCtx) (interface{}, *soap.Fault) {
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		return l.unresolvedVolumes(h), nil
	})
}
func iscsiAdapter(h *hostState, device string) (*hba, *soap.Fault) {
	a := h.hba(device)
	if a == nil || a.Kind != "iscsi" {
		return nil, fault(fmt.Sprintf("iSCSI adapter %q not found on host %s", device, h.Name), &types.NotFound{})
	}
	return a, nil
}

func validTarget(address string, p int32, iqn string) string {
	if strings.TrimSpace(address) == "" {
		return "target address is empty"
	}
	if p < 0 || p > 65535 {
		return fmt.Sprintf("target port %d is out of range", p)
	}
	l := strings.ToLower(iqn)
	if iqn != "" && !strings.HasPrefix(l, "iqn.") && !strings.HasPrefix(l, "eui.") && !strings.HasPrefix(l, "naa.") {
		return fmt.Sprintf("%q is not an iSCSI name", iqn)
	}
	return ""
}

func (l *Lab) opAddStaticTargets(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.AddInternetScsiStaticTargets)
	return l.onIscsi(c, req.IScsiHbaDevice, func(h *hostState, a *hba) *soap.Fault {
		for _, t := range req.Targets {
			msg := validTarget(t.Address, t.Port, t.IScsiName)
			if msg == "" && t.IScsiName == "" {
				msg = "a static target needs the target's iSCSI name"
			}
			if msg != "" {
				return fault(msg, &types.HostConfigFault{})
			}
			if hasStaticTarget(a, IscsiTarget{Address: t.Address, Port: t.Port, IQN: t.IScsiName}) {
				return fault(fmt.Sprintf("static target %s:%d %s already exists on %s", t.Address, port(t.Port), t.IScsiName, a.Device), &types.HostConfigFault{})
			}
		}
		for _, t := range req.Targets {
			a.Static = append(a.Static, target{Address: t.Address, Port: port(t.Port), IQN: t.IScsiName, Method: "staticMethod"})
		}
		l.checkPaths() // a dead path through this target may come back
		return nil
	})
}
func (l *Lab) opRemoveStaticTargets(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.RemoveInternetScsiStaticTargets)
	return l.onIscsi(c, req.IScsiHbaDevice, func(h *hostState, a *hba) *soap.Fault {
		for _, t := range req.Targets {
			if !hasStaticTarget(a, IscsiTarget{Address: t.Address, Port: t.Port, IQN: t.IScsiName}) {
				return fault(fmt.Sprintf("static target %s:%d %s not found on %s", t.Address, port(t.Port), t.IScsiName, a.Device), &types.NotFound{})
			}
		}
		for _, t := range req.Targets {
			a.Static = keepTargets(a.Static, func(s target) bool {
				return s.Address == t.Address && port(s.Port) == port(t.Port) && strings.EqualFold(s.IQN, t.IScsiName)
			})
		}
		l.checkPaths()
		return nil
	})
}

// keepTargets returns the targets for which drop is false.
func keepTargets(targets []target, drop func(target) bool) []target {
	kept := targets[:0]
	for _, t := range targets {
		if !drop(t) {
			kept = append(kept, t)
		}
	}
	return kept
}
func (l *Lab) opAddSendTargets(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.AddInternetScsiSendTargets)
	return l.onIscsi(c, req.IScsiHbaDevice, func(h *hostState, a *hba) *soap.Fault {
		for _, t := range req.Targets {
			if msg := validTarget(t.Address, t.Port, ""); msg != "" {
				return fault(msg, &types.HostConfigFault{})
			}
			if hasSendTarget(a, t.Address, t.Port) {
				return fault(fmt.Sprintf("send target %s:%d already exists on %s", t.Address, port(t.Port), a.Device), &types.HostConfigFault{})
			}
		}
		for _, t := range req.Targets {
			a.Send = append(a.Send, sendTarget{Address: t.Address, Port: port(t.Port)})
		}
		return nil
	})
}

func hasSendTarget(a *hba, address string, p int32) bool {
	for _, s := range a.Send {
		if s.Address == address && port(s.Port) == port(p) {
			return true
		}
	}
	return false
}
func (l *Lab) opRemoveSendTargets(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.RemoveInternetScsiSendTargets)
	return l.onIscsi(c, req.IScsiHbaDevice, func(h *hostState, a *hba) *soap.Fault {
		for _, t := range req.Targets {
			if !hasSendTarget(a, t.Address, t.Port) {
				return fault(fmt.Sprintf("send target %s:%d not found on %s", t.Address, port(t.Port), a.Device), &types.NotFound{})
			}
		}
		for _, t := range req.Targets {
			send := a.Send[:0]
			for _, s := range a.Send {
				if !(s.Address == t.Address && port(s.Port) == port(t.Port)) {
					send = append(send, s)
				}
			}
			a.Send = send
			// what the send target discovered goes with it
			a.Static = keepTargets(a.Static, func(s target) bool {
				return s.Method == "sendTargetMethod" && s.Address == t.Address && port(s.Port) == port(t.Port)
			})
		}
		l.checkPaths()
		return nil
	})
}
func (l *Lab) opUpdateSwIscsi(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.UpdateSoftwareInternetScsiEnabled)
	if req.Enabled {
		return nil, nil // the software adapter is always enabled in the lab
	}
	return nil, fault("lab: disabling the software iSCSI adapter is not modelled", &types.HostConfigFault{})
}

func (l *Lab) opUnmountVmfs(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.UnmountVmfsVolume)
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		ds := l.vmfsByUUID(req.VmfsUuid)
		if ds == nil || ds.Mounts[h.Name] == nil {
			if h.Unmounted[req.VmfsUuid] {
				return nil, fault(fmt.Sprintf("VMFS volume %s is already unmounted on %s", req.VmfsUuid, h.Name), &types.InvalidState{})
			}
			return nil, fault(fmt.Sprintf("no VMFS volume with uuid %s is mounted on %s", req.VmfsUuid, h.Name), &types.NotFound{})
		}
		if f := vmsInUse(ds, l.vmsOnDatastore(ds, h), "unmount"); f != nil {
			return nil, f
		}
		h.Unmounted[req.VmfsUuid] = true
		l.unmountDatastore(ds, h)
		return nil, nil
	})
}

// vmsInUse is the ResourceInUse fault for doing `what` to ds while vms are registered on it.
func vmsInUse(ds *dsState, vms []*vmState, what string) *soap.Fault {
	if len(vms) == 0 {
		return nil
	}
	return fault(fmt.Sprintf("cannot %s %s: virtual machine %s is registered on it", what, ds.Name, vms[0].name()),
		&types.ResourceInUse{Type: "VirtualMachine", Name: vms[0].name()})
}
func (l *Lab) opMountVmfs(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.MountVmfsVolume)
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		if !h.Unmounted[req.VmfsUuid] {
			if ds := l.vmfsByUUID(req.VmfsUuid); ds != nil && ds.Mounts[h.Name] != nil {
				return nil, fault("VMFS volume "+req.VmfsUuid+" is already mounted", &types.InvalidState{})
			}
			return nil, fault("no unmounted VMFS volume with uuid "+req.VmfsUuid, &types.NotFound{})
		}
		delete(h.Unmounted, req.VmfsUuid)
		l.discoverVmfs(h)
		l.publishHost(h)
		return nil, nil
	})
}
func deviceByUUID(h *hostState, uuid string) *device {
	for _, d := range h.Devices {
		if d.UUID == uuid {
			return d
		}
	}
	return nil
}

func (l *Lab) opDetachLun(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.DetachScsiLun)
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		d := deviceByUUID(h, req.LunUuid)
		if d == nil {
			msg := fmt.Sprintf("no SCSI LUN with uuid %s on %s", req.LunUuid, h.Name)
			if strings.HasPrefix(req.LunUuid, "naa.") {
				msg += " (DetachScsiLun takes ScsiLun.uuid, not the canonical naa name)"
			}
			return nil, fault(msg, &types.NotFound{})
		}
		if ds := l.vmfsMountedOn(h, d.NAA); ds != nil {
			return nil, fault(fmt.Sprintf("cannot detach %s: VMFS datastore %s is mounted on it", d.NAA, ds.Name),
				&types.ResourceInUse{Type: "Datastore", Name: ds.Name})
		}
		if v := l.rdmUser(h, d.NAA); v != nil {
			return nil, fault(fmt.Sprintf("cannot detach %s: virtual machine %s maps it as a raw device", d.NAA, v.name()),
				&types.ResourceInUse{Type: "VirtualMachine", Name: v.name()})
		}
		if !d.Attached {
			return nil, fault(fmt.Sprintf("device %s is already detached", d.NAA), &types.InvalidState{})
		}
		d.Attached = false
		l.publishHost(h)
		return nil, nil
	})
}
func (l *Lab) opAttachLun(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.AttachScsiLun)
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		d := deviceByUUID(h, req.LunUuid)
		if d == nil {
			return nil, fault("no SCSI LUN with uuid "+req.LunUuid, &types.NotFound{})
		}
		if d.Attached {
			return nil, fault(fmt.Sprintf("device %s is already attached", d.NAA), &types.InvalidState{})
		}
		d.Attached = true
		l.publishHost(h)
		return nil, nil
	})
}
func (l *Lab) opResignature(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.ResignatureUnresolvedVmfsVolume_Task)
	h, f := l.hostOf(c)
	if f != nil {
		return nil, f
	}
	return l.runTask(h.Ref, "HostDatastoreSystem.ResignatureUnresolvedVmfsVolume_Task", func() (types.AnyType, *soap.Fault) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.resignature(h, req.ResolutionSpec.ExtentDevicePath)
	}), nil
}

// resignature writes a new signature on the device at paths[0], mounts the volume on this
// host, then has every other host the LUN is exported to rescan and mount it (as vCenter
// does) (l.mu held).
func (l *Lab) resignature(h *hostState, paths []string) (types.AnyType, *soap.Fault) {
	if len(paths) == 0 {
		return nil, fault("no extent device path given", &types.InvalidArgument{InvalidProperty: "resolutionSpec.extentDevicePath"})
	}
	p := paths[0]
	naa := strings.TrimPrefix(p, "/vmfs/devices/disks/")
	if i := strings.LastIndexByte(naa, ':'); i > 0 {
		naa = naa[:i]
	}
	d := h.Devices[naa]
	if d == nil || !d.Attached || d.Lost || !l.hasPath(h, naa) {
		return nil, fault(fmt.Sprintf("device %s is not visible on %s (present the LUN, then rescan the adapter)", p, h.Name), &types.NotFound{})
	}
	if ref := l.findLun(naa); ref != nil && ref.Lun.ReadOnly {
		return nil, fault("cannot write a new signature on "+p+": the device is read-only "+
			"(present a read-write copy of the snapshot instead)", &types.HostConfigFault{})
	}
	hdr := readVmfsHeader(d.ContentDir)
	if hdr == nil {
		return nil, fault("no VMFS volume on "+p, &types.HostConfigFault{})
	}
	if hdr.NAA == naa {
		return nil, fault("the VMFS volume on "+p+" is not an unresolved copy", &types.HostConfigFault{})
	}
	newHdr := vmfsHeader{UUID: newVmfsUUID(), Label: fmt.Sprintf("snap-%s-%s", randomHex(4), hdr.Label), NAA: naa}
	if err := writeVmfsHeader(d.ContentDir, newHdr); err != nil {
		return nil, fault(err.Error(), &types.HostConfigFault{})
	}
	ds := l.newVmfsDatastore(&newHdr, d)
	l.mountDatastore(ds, h)
	return types.HostResignatureRescanResult{Rescan: l.rescanSharers(h, naa), Result: ds.Ref}, nil
}

// rescanSharers does what vCenter does after a resignature on h: every other host that the
// fabric exports device naa to rescans its adapters of that protocol (as RescanHba would:
// APD check included), which mounts the resignatured volume if the host sees the device.
// It returns the hosts rescanned (l.mu held).
func (l *Lab) rescanSharers(h *hostState, naa string) []types.HostVmfsRescanResult {
	l.refreshForRescan()
	lun := l.findLun(naa)
	var out []types.HostVmfsRescanResult
	for _, other := range l.hosts {
		if other == h || lun == nil {
			continue
		}
		kinds := exportedKinds(lun.Lun, other)
		if len(kinds) == 0 {
			continue
		}
		for _, a := range other.HBAs {
			if kinds[a.Kind] {
				l.rescanAdapter(other, a)
			}
		}
		l.publishHost(other)
		out = append(out, types.HostVmfsRescanResult{Host: other.Ref})
	}
	l.checkPaths()
	return out
}

// exportedKinds returns the adapter kinds ("iscsi", "fc") of h through which one of its
// initiators is in lun's exports.
func exportedKinds(lun *FabricLun, h *hostState) map[string]bool {
	kinds := map[string]bool{}
	for _, e := range lun.Exports {
		for _, a := range h.HBAs {
			if (a.Kind == "iscsi" && e.Protocol == "iscsi" && e.Initiator == a.IQN) ||
				(a.Kind == "fc" && e.Protocol == "fc" && e.Initiator == a.WWPN) {
				kinds[a.Kind] = true
			}
		}
	}
	return kinds
}

func (l *Lab) opCreateNas(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.CreateNasDatastore)
	h, f := l.hostOf(c)
	if f != nil {
		return nil, f
	}
	spec := req.Spec
	server := spec.RemoteHost
	nfsType := spec.Type
	if nfsType == "" {
		nfsType = "NFS"
	}
	if nfsType == "NFS41" && len(spec.RemoteHostNames) > 0 {
		server = spec.RemoteHostNames[0]
	}
	switch {
	case server == "":
		return nil, fault("remoteHost is empty", &types.InvalidArgument{InvalidProperty: "spec.remoteHost"})
	case spec.RemotePath == "":
		return nil, fault("remotePath is empty", &types.InvalidArgument{InvalidProperty: "spec.remotePath"})
	case spec.LocalPath == "":
		return nil, fault("localPath (the datastore name) is empty", &types.InvalidArgument{InvalidProperty: "spec.localPath"})
	case nfsType != "NFS" && nfsType != "NFS41":
		return nil, fault("unsupported NAS type "+nfsType, &types.InvalidArgument{InvalidProperty: "spec.type"})
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refreshForRescan()
	l.checkPaths()
	return l.mountNfs(h, spec.LocalPath, nfsType, server, spec.RemotePath)
}

// mountNfs mounts server:path on h as datastore name, if the array exports it to the
// host's VMkernel address with read-write and root access (l.mu held).
func (l *Lab) mountNfs(h *hostState, name, nfsType, server, remotePath string) (interface{}, *soap.Fault) {
	what := fmt.Sprintf("NFS mount %s:%s failed", server, remotePath)
	export, ok := l.nfsExportFor(h, server, remotePath)
	if export == nil {
		if !l.isNfsServer(server) {
			return nil, platformFault(what + ": Unable to connect to NFS server.")
		}
		return nil, platformFault(what + ": The mount request was denied by the NFS server. Check that the export exists and that the client is permitted to mount it.")
	}
	if !ok {
		return nil, platformFault(what + ": The mount request was denied by the NFS server. Check that the export exists and that the client is permitted to mount it (read-write, with root access).")
	}
	if existing := l.datastoreByName(name); existing != nil {
		if existing.Kind != "nfs" || existing.Server != server || existing.Path != cleanNfsPath(remotePath) {
			return nil, fault(fmt.Sprintf("a datastore named %q already exists", name),
				&types.DuplicateName{Name: name, Object: existing.Ref})
		}
		if existing.Mounts[h.Name] != nil {
			return nil, fault(fmt.Sprintf("%s is already mounted on %s", name, h.Name), &types.AlreadyExists{Name: name})
		}
		l.mountDatastore(existing, h)
		return existing.Ref, nil
	}
	for _, other := range l.datastores {
		if other.Kind == "nfs" && other.Server == server && other.Path == cleanNfsPath(remotePath) && other.Mounts[h.Name] != nil {
			return nil, fault(fmt.Sprintf("%s:%s is already mounted on %s as datastore %s", server, remotePath, h.Name, other.Name),
				&types.AlreadyExists{Name: other.Name})
		}
	}
	ds := l.newNasDatastore(name, nfsType, server, remotePath, export)
	l.mountDatastore(ds, h)
	return ds.Ref, nil
}

func platformFault(msg string) *soap.Fault {
	return fault(msg, &types.PlatformConfigFault{
		HostConfigFault: types.HostConfigFault{VimFault: types.VimFault{MethodFault: types.MethodFault{
			FaultMessage: []types.LocalizableMessage{{Key: "com.vmware.esx.hostctl.default", Message: msg}},
		}}},
		Text: msg,
	})
}

func (l *Lab) isNfsServer(addr string) bool {
	for _, f := range l.fabrics {
		for _, e := range f.NfsExports {
			if contains(e.Servers, addr) {
				return true
			}
		}
	}
	return false
}

func (l *Lab) opRemoveDatastore(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.RemoveDatastore)
	return l.onHost(c, func(h *hostState) (interface{}, *soap.Fault) {
		ds := l.datastores[req.Datastore.Value]
		if ds == nil || ds.Mounts[h.Name] == nil {
			return nil, fault(fmt.Sprintf("datastore %s is not mounted on %s", req.Datastore.Value, h.Name), &types.NotFound{})
		}
		if ds.Kind == "vmfs" {
			return nil, l.destroyVmfs(ds)
		}
		if f := vmsInUse(ds, l.vmsOnDatastore(ds, h), "remove"); f != nil {
			return nil, f
		}
		l.unmountDatastore(ds, h)
		return nil, nil
	})
}
func (l *Lab) destroyVmfs(ds *dsState) *soap.Fault {
	if f := vmsInUse(ds, l.vmsOnDatastore(ds, nil), "remove"); f != nil {
		return f
	}
	entries, _ := os.ReadDir(ds.ContentDir)
	for _, e := range entries {
		_ = os.RemoveAll(filepath.Join(ds.ContentDir, e.Name()))
	}
	l.event("vmfs_destroyed", "", ds.Name, ds.NAA, "RemoveDatastore/Destroy on a VMFS datastore erased the volume")
	for _, hn := range sortedKeys(ds.Mounts) {
		l.unmountDatastore(ds, l.hostByName[hn])
	}
	return nil
}

func validDatastoreName(name string) string {
	switch {
	case strings.TrimSpace(name) == "":
		return "the name is empty"
	case utf8.RuneCountInString(name) > 80:
		return "the name is longer than 80 characters"
	case strings.ContainsAny(name, "/\\%"):
		return "the name contains / \\ or %"
	}
	return ""
}

func (l *Lab) rename(ref types.ManagedObjectReference, newName string) *soap.Fault {
	l.mu.Lock()
	defer l.mu.Unlock()
	ds := l.datastores[ref.Value]
	if ds == nil {
		return fault("datastore not found", &types.ManagedObjectNotFound{Obj: ref})
	}
	if msg := validDatastoreName(newName); msg != "" {
		return fault(msg, &types.InvalidName{Name: newName})
	}
	if other := l.datastoreByName(newName); other != nil && other != ds {
		return fault(fmt.Sprintf("the name %q already exists", newName), &types.DuplicateName{Name: newName, Object: other.Ref})
	}
	if ds.Kind == "vmfs" { // a VMFS datastore's name is its volume label, kept on the volume
		hdr := readVmfsHeader(ds.ContentDir)
		if hdr == nil {
			return fault("no VMFS volume in "+ds.ContentDir, &types.HostConfigFault{})
		}
		hdr.Label = newName
		if err := writeVmfsHeader(ds.ContentDir, *hdr); err != nil {
			return fault(err.Error(), &types.HostConfigFault{})
		}
		ds.Label = newName
	}
	old := ds.Name
	ds.Name = newName
	l.publishDatastore(ds)
	l.renameVmPaths(old, newName)
	for hn := range ds.Mounts {
		l.publishHost(l.hostByName[hn])
	}
	return nil
}

func (l *Lab) opRenameDatastore(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.RenameDatastore)
	return nil, l.rename(c.method.This, req.NewName)
}

func (l *Lab) opRenameDatastoreTask(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.Rename_Task)
	return l.runTask(c.method.This, "Datastore.Rename_Task", func() (types.AnyType, *soap.Fault) {
		return nil, l.rename(c.method.This, req.NewName)
	}), nil
}

func (l *Lab) destroy(ref types.ManagedObjectReference) *soap.Fault {
	l.mu.Lock()
	defer l.mu.Unlock()
	ds := l.datastores[ref.Value]
	if ds == nil {
		return fault("datastore not found", &types.ManagedObjectNotFound{Obj: ref})
	}
	if ds.Kind == "vmfs" {
		return l.destroyVmfs(ds)
	}
	if f := vmsInUse(ds, l.vmsOnDatastore(ds, nil), "remove"); f != nil {
		return f
	}
	for _, hn := range sortedKeys(ds.Mounts) {
		l.unmountDatastore(ds, l.hostByName[hn])
	}
	return nil
}

func (l *Lab) opDestroyDatastore(c *callCtx) (interface{}, *soap.Fault) {
	ref := c.method.This
	return l.runTask(ref, "Datastore.Destroy_Task", func() (types.AnyType, *soap.Fault) {
		return nil, l.destroy(ref)
	}), nil
}

func (l *Lab) opDestroyDatastoreSync(c *callCtx) (interface{}, *soap.Fault) {
	return nil, l.destroy(c.method.This)
}

func (l *Lab) opRefreshDatastore(c *callCtx) (interface{}, *soap.Fault) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ds := l.datastores[c.method.This.Value]
	if ds == nil {
		return nil, fault("datastore not found", &types.ManagedObjectNotFound{Obj: c.method.This})
	}
	l.publishDatastore(ds)
	return nil, nil
}
