package main

// Moving and copying files between lab datastores: Storage vMotion / cold relocation
// (RelocateVM_Task moves the VM's folder, as vCenter does), and the FileManager's copy
// and delete tasks (whose simulator tasks name a non-entity, which clients cannot read).

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

func (l *Lab) registerFileOverrides(s *soapLayer) {
	s.handle("VirtualMachine", "RelocateVM_Task", l.opRelocate)
	s.handle("FileManager", "CopyDatastoreFile_Task", l.opCopyFile)
	s.handle("FileManager", "DeleteDatastoreFile_Task", l.opDeleteFile)
}

// resolvePath maps "[datastore] path" to a local path on an accessible lab datastore.
func (l *Lab) resolvePath(dsPath string) (*dsState, string, *soap.Fault) {
	var p object.DatastorePath
	if !p.FromString(dsPath) {
		return nil, "", fault("invalid datastore path "+dsPath, &types.InvalidDatastorePath{DatastorePath: dsPath})
	}
	ds := l.datastoreByName(p.Datastore)
	if ds == nil {
		return nil, "", fault("datastore "+p.Datastore+" not found", &types.InvalidDatastore{Name: p.Datastore})
	}
	accessible := false
	for _, m := range ds.Mounts {
		accessible = accessible || m.Accessible
	}
	if !accessible {
		return nil, "", fault("datastore "+ds.Name+" is not accessible", &types.InvalidDatastore{Name: ds.Name})
	}
	clean := path.Clean("/" + p.Path)
	return ds, filepath.Join(ds.ContentDir, clean), nil
}

func copyTree(src, dst string) error {
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return copyFile(src, dst, info.Mode())
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	r, err := os.Open(src)
	if err != nil {
		return err
	}
	defer r.Close()
	w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode.Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func (l *Lab) opCopyFile(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.CopyDatastoreFile_Task)
	return l.runTask(l.dcRef, "FileManager.CopyDatastoreFile_Task", func() (types.AnyType, *soap.Fault) {
		l.mu.Lock()
		defer l.mu.Unlock()
		_, src, f := l.resolvePath(req.SourceName)
		if f != nil {
			return nil, f
		}
		_, dst, f := l.resolvePath(req.DestinationName)
		if f != nil {
			return nil, f
		}
		if _, err := os.Stat(src); err != nil {
			return nil, fault("file "+req.SourceName+" was not found", &types.FileNotFound{FileFault: types.FileFault{File: req.SourceName}})
		}
		if _, err := os.Stat(dst); err == nil && !isTrue(req.Force) {
			return nil, fault("file "+req.DestinationName+" already exists", &types.FileAlreadyExists{FileFault: types.FileFault{File: req.DestinationName}})
		}
		if _, err := os.Stat(filepath.Dir(dst)); err != nil {
			return nil, fault("the folder of "+req.DestinationName+" does not exist (MakeDirectory first)",
				&types.FileNotFound{FileFault: types.FileFault{File: path.Dir(req.DestinationName)}})
		}
		if err := copyTree(src, dst); err != nil {
			return nil, fault(err.Error(), &types.CannotCreateFile{FileFault: types.FileFault{File: req.DestinationName}})
		}
		return nil, nil
	}), nil
}

func (l *Lab) opDeleteFile(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.DeleteDatastoreFile_Task)
	return l.runTask(l.dcRef, "FileManager.DeleteDatastoreFile_Task", func() (types.AnyType, *soap.Fault) {
		l.mu.Lock()
		defer l.mu.Unlock()
		ds, p, f := l.resolvePath(req.Name)
		if f != nil {
			return nil, f
		}
		if p == filepath.Clean(ds.ContentDir) {
			return nil, fault("refusing to delete the root of "+ds.Name, &types.InvalidArgument{InvalidProperty: "name"})
		}
		if _, err := os.Stat(p); err != nil {
			return nil, fault("file "+req.Name+" was not found", &types.FileNotFound{FileFault: types.FileFault{File: req.Name}})
		}
		if err := os.RemoveAll(p); err != nil {
			return nil, fault(err.Error(), &types.CannotDeleteFile{FileFault: types.FileFault{File: req.Name}})
		}
		return nil, nil
	}), nil
}

func isTrue(b *bool) bool { return b != nil && *b }

// opRelocate moves a VM's folder to the target datastore (and/or the VM to another host),
// rewriting its paths and uuid.location as vCenter does, so the source can go away.
func (l *Lab) opRelocate(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.RelocateVM_Task)
	ref := c.method.This
	return l.runTask(ref, "VirtualMachine.RelocateVM_Task", func() (types.AnyType, *soap.Fault) {
		l.mu.Lock()
		defer l.mu.Unlock()
		v, vm := l.vmFor(ref)
		if v == nil || vm == nil {
			return nil, fault("virtual machine not found", &types.ManagedObjectNotFound{Obj: ref})
		}
		return nil, l.relocate(v, vm, req.Spec)
	}), nil
}

func (l *Lab) relocate(v *vmState, vm *simulator.VirtualMachine, spec types.VirtualMachineRelocateSpec) *soap.Fault {
	if v.Pending != nil {
		return fault(vm.Name+" is waiting for an answer to a question", &types.InvalidState{})
	}
	src := l.datastores[v.Datastore]
	h := l.hostByName[v.hostName(l)]
	if spec.Host != nil {
		if h = l.hostByRef[spec.Host.Value]; h == nil {
			return fault("host not found", &types.InvalidArgument{InvalidProperty: "spec.host"})
		}
	}
	if src == nil || h == nil {
		return fault(vm.Name+" is not on a lab datastore", &types.InvalidState{})
	}
	dst := src
	if spec.Datastore != nil {
		if dst = l.datastores[spec.Datastore.Value]; dst == nil {
			return fault("target datastore not found", &types.InvalidDatastore{})
		}
	}
	moves, f := l.planDiskMoves(vm, spec, dst)
	if f != nil {
		return f
	}
	need := []*dsState{src, dst}
	moving := dst != src
	for _, m := range moves {
		if m.from.DS != nil {
			need = append(need, m.from.DS)
		}
		if m.to != nil {
			need = append(need, m.to)
			moving = true
		}
	}
	for _, ds := range need {
		if m := ds.Mounts[h.Name]; m == nil || !m.Accessible {
			return fault(fmt.Sprintf("datastore %s is not accessible from host %s", ds.Name, h.Name), &types.InvalidDatastore{Name: ds.Name})
		}
	}
	if moving {
		if f := l.moveFiles(v, vm, src, dst, moves); f != nil {
			return f
		}
	}
	if old := vm.Runtime.Host; old != nil && *old != h.Ref {
		oldHost := simulator.Map.Get(*old).(*simulator.HostSystem)
		simulator.Map.RemoveReference(oldHost, &oldHost.Vm, vm.Self)
		newHost := simulator.Map.Get(h.Ref).(*simulator.HostSystem)
		simulator.Map.AddReference(newHost, &newHost.Vm, vm.Self)
		href := h.Ref
		simulator.Map.WithLock(vm, func() {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "runtime.host", Val: &href}, {Name: "summary.runtime.host", Val: &href},
			})
		})
	}
	l.syncDatastoreUse(vm)
	l.syncConnection(v, vm)
	return nil
}

// diskMove is one disk of a relocation: its file and the datastore it goes to (nil: it
// stays where it is).
type diskMove struct {
	disk *types.VirtualDisk
	info *types.VirtualDeviceFileBackingInfo
	from diskFile
	to   *dsState
}

// planDiskMoves says where each disk of vm goes: to its locator's datastore (spec.disk),
// else to spec.datastore if the spec names one, else nowhere (l.mu held).
func (l *Lab) planDiskMoves(vm *simulator.VirtualMachine, spec types.VirtualMachineRelocateSpec, dst *dsState) ([]diskMove, *soap.Fault) {
	locators := map[int32]*dsState{}
	for _, loc := range spec.Disk {
		ds := l.datastores[loc.Datastore.Value]
		if ds == nil {
			return nil, fault(fmt.Sprintf("datastore %s of disk %d not found", loc.Datastore.Value, loc.DiskId), &types.InvalidDatastore{})
		}
		locators[loc.DiskId] = ds
	}
	var moves []diskMove
	seen := map[int32]bool{}
	for _, d := range vm.Config.Hardware.Device {
		disk, ok := d.(*types.VirtualDisk)
		if !ok {
			continue
		}
		fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo)
		if !ok {
			continue
		}
		info := fb.GetVirtualDeviceFileBackingInfo()
		m := diskMove{disk: disk, info: info, from: l.fileOf(info.FileName), to: locators[disk.Key]}
		seen[disk.Key] = true
		if m.to == nil && spec.Datastore != nil {
			m.to = dst
		}
		if m.to != nil && m.from.DS == m.to {
			m.to = nil // already there
		}
		if m.to != nil && m.from.DS == nil {
			return nil, fileNotFound(m.from.Path, "")
		}
		moves = append(moves, m)
	}
	for id := range locators {
		if !seen[id] {
			return nil, fault(fmt.Sprintf("%s has no disk %d", vm.Name, id), &types.InvalidArgument{InvalidProperty: "spec.disk.diskId"})
		}
	}
	return moves, nil
}

// freeFolder returns base, or base_1, base_2... : a folder that neither exists on ds nor
// is in taken.
func freeFolder(ds *dsState, base string, taken map[string]bool) string {
	folder := base
	for i := 1; ; i++ {
		if _, err := os.Stat(filepath.Join(ds.ContentDir, folder)); os.IsNotExist(err) && !taken[ds.Name+"/"+folder] {
			taken[ds.Name+"/"+folder] = true
			return folder
		}
		folder = fmt.Sprintf("%s_%d", base, i)
	}
}

type fileCopy struct{ from, to string }

// moveFiles moves vm's folder from src to dst (when they differ) and each disk of moves
// to its datastore (into a folder named after the VM), as Storage vMotion does: it copies
// the files, rewrites every path of the VM and its .vmx (uuid.location, disk names), then
// removes the sources (l.mu held).
func (l *Lab) moveFiles(v *vmState, vm *simulator.VirtualMachine, src, dst *dsState, moves []diskMove) *soap.Fault {
	vmDir := path.Dir(v.RelPath)
	cfgMove := dst != src
	if cfgMove && vmDir == "." {
		return fault(fmt.Sprintf("lab: %s keeps its files in the root of %s; relocating it would copy the whole datastore", vm.Name, src.Name),
			&types.NotSupported{})
	}
	inVmDir := func(f diskFile) bool { return f.DS == src && path.Dir(f.Rel) == vmDir }
	taken := map[string]bool{}
	folders := map[*dsState]string{src: vmDir}
	newDir := vmDir
	if cfgMove {
		newDir = freeFolder(dst, vm.Name, taken)
		folders[dst] = newDir
	}
	var copies []fileCopy
	renames := map[string]string{}
	exclude := map[string]bool{} // files of the VM's folder that do not go with it
	for _, m := range moves {
		withFolder := cfgMove && inVmDir(m.from) && m.to == dst
		if m.to == nil && !(cfgMove && inVmDir(m.from)) {
			continue // stays, and is not in the folder that moves
		}
		files, err := diskFiles(m.from)
		if err != nil {
			return fileNotFound(m.from.Path, "")
		}
		if m.to == nil { // stays on src while its folder moves away
			for _, file := range files {
				exclude[file] = true
			}
			continue
		}
		if withFolder {
			continue // goes with the folder
		}
		if inVmDir(m.from) {
			for _, file := range files {
				exclude[file] = true
			}
		}
		folder, ok := folders[m.to]
		if !ok {
			folder = freeFolder(m.to, vm.Name, taken)
			folders[m.to] = folder
		}
		for _, file := range files {
			copies = append(copies, fileCopy{file, filepath.Join(m.to.ContentDir, folder, filepath.Base(file))})
		}
		renames[m.info.FileName] = fmt.Sprintf("[%s] %s", m.to.Name, path.Join(folder, path.Base(m.from.Rel)))
	}
	if cfgMove {
		root := filepath.Join(src.ContentDir, vmDir)
		err := filepath.Walk(root, func(file string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() || exclude[file] {
				return err
			}
			rel, _ := filepath.Rel(root, file)
			copies = append(copies, fileCopy{file, filepath.Join(dst.ContentDir, newDir, rel)})
			return nil
		})
		if err != nil {
			return fault("reading "+vmDir+": "+err.Error(), &types.FileFault{File: v.VmxPath})
		}
	}
	for _, c := range copies {
		if _, err := os.Stat(c.to); err == nil {
			return fault("file "+c.to+" already exists", &types.FileAlreadyExists{FileFault: types.FileFault{File: c.to}})
		}
	}
	for i, c := range copies {
		info, err := os.Stat(c.from)
		if err == nil {
			if err = os.MkdirAll(filepath.Dir(c.to), 0o755); err == nil {
				err = copyFile(c.from, c.to, info.Mode())
			}
		}
		if err != nil {
			for _, done := range copies[:i+1] {
				_ = os.Remove(done.to)
			}
			return fault("copying "+c.from+": "+err.Error(), &types.CannotCreateFile{})
		}
	}

	oldPrefix := fmt.Sprintf("[%s] %s/", src.Name, vmDir)
	newPrefix := fmt.Sprintf("[%s] %s/", dst.Name, newDir)
	fix := func(s string) string {
		if r, ok := renames[s]; ok {
			return r
		}
		if !cfgMove {
			return s
		}
		if strings.HasPrefix(s, oldPrefix) {
			if _, stays := l.stayingFile(s, moves); !stays {
				return newPrefix + strings.TrimPrefix(s, oldPrefix)
			}
		}
		if s == strings.TrimSuffix(oldPrefix, "/") {
			return strings.TrimSuffix(newPrefix, "/")
		}
		return s
	}
	simulator.Map.WithLock(vm, func() {
		rewritePaths(vm, fix, nil)
		for _, d := range vm.Config.Hardware.Device {
			if b, ok := d.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				info := b.GetVirtualDeviceFileBackingInfo()
				if f := l.fileOf(info.FileName); f.DS != nil {
					ref := f.DS.Ref
					info.Datastore = &ref
				}
			}
		}
		files := vm.Config.Files
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "config.files", Val: files},
			{Name: "summary.config.vmPathName", Val: files.VmPathName},
			{Name: "config.hardware.device", Val: vm.Config.Hardware.Device},
		})
	})
	if cfgMove {
		newRel := path.Join(newDir, path.Base(v.RelPath))
		v.Datastore, v.RelPath = dst.Ref.Value, newRel
		v.VmxPath = fmt.Sprintf("[%s] %s", dst.Name, newRel)
	}
	l.rewriteVmxPaths(v, vm, cfgMove)
	for _, c := range copies { // a move: the sources go
		_ = os.Remove(c.from)
	}
	if cfgMove {
		removeEmptyDirs(filepath.Join(src.ContentDir, vmDir))
	}
	for _, m := range moves {
		if m.to != nil && m.from.DS != nil && !inVmDir(m.from) {
			removeEmptyDirs(filepath.Dir(m.from.local()))
		}
	}
	return nil
}

// stayingFile reports whether the datastore path s is a disk of moves that stays put.
func (l *Lab) stayingFile(s string, moves []diskMove) (diskMove, bool) {
	for _, m := range moves {
		if m.to == nil && m.info.FileName == s {
			return m, true
		}
	}
	return diskMove{}, false
}

// removeEmptyDirs removes dir and the directories under it that hold no file.
func removeEmptyDirs(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() {
			removeEmptyDirs(filepath.Join(dir, e.Name()))
		}
	}
	_ = os.Remove(dir) // fails, as it should, while something is left
}

// rewriteVmxPaths writes where the VM's files now are into its .vmx: uuid.location when
// the .vmx moved, and each disk's fileName (relative in the VM's folder, else
// /vmfs/volumes/<volume id>/<path>) (l.mu held).
func (l *Lab) rewriteVmxPaths(v *vmState, vm *simulator.VirtualMachine, moved bool) {
	ds := l.datastores[v.Datastore]
	vmx, err := readVmx(filepath.Join(ds.ContentDir, v.RelPath))
	if err != nil {
		return
	}
	if moved {
		vmx.set("uuid.location", uuidLocation(ds.volumeID(), v.RelPath))
	}
	byUnit := map[int32]string{}
	for _, d := range vm.Config.Hardware.Device {
		disk, ok := d.(*types.VirtualDisk)
		if !ok || disk.UnitNumber == nil {
			continue
		}
		if fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			byUnit[*disk.UnitNumber] = fb.GetVirtualDeviceFileBackingInfo().FileName
		}
	}
	for key, i := range vmx.index {
		m := diskKey.FindStringSubmatch(key)
		if m == nil {
			continue
		}
		k, _, _ := parseVmxLine(vmx.lines[i])
		unit, _ := strconv.Atoi(m[3])
		name, ok := byUnit[int32(unit)]
		if !ok {
			continue
		}
		f := l.fileOf(name)
		switch {
		case f.DS == nil:
			continue // an unresolved raw path stays as written
		case f.DS == ds && path.Dir(f.Rel) == path.Dir(v.RelPath):
			vmx.set(k, path.Base(f.Rel))
		default:
			vmx.set(k, "/vmfs/volumes/"+f.DS.volumeID()+"/"+f.Rel)
		}
	}
	_ = vmx.save()
}
