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
	return l.runTask(l.dcRef, "copyDatastoreFileTask", func() (types.AnyType, *soap.Fault) {
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
	return l.runTask(l.dcRef, "deleteDatastoreFileTask", func() (types.AnyType, *soap.Fault) {
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
	return l.runTask(ref, "relocateVMTask", func() (types.AnyType, *soap.Fault) {
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
	dst := src
	if spec.Datastore != nil {
		if dst = l.datastores[spec.Datastore.Value]; dst == nil {
			return fault("target datastore not found", &types.InvalidDatastore{})
		}
	}
	for _, ds := range []*dsState{src, dst} {
		if m := ds.Mounts[h.Name]; m == nil || !m.Accessible {
			return fault(fmt.Sprintf("datastore %s is not accessible from host %s", ds.Name, h.Name), &types.InvalidDatastore{Name: ds.Name})
		}
	}
	if dst != src {
		if f := l.moveFolder(v, vm, src, dst); f != nil {
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
	return nil
}

func (l *Lab) moveFolder(v *vmState, vm *simulator.VirtualMachine, src, dst *dsState) *soap.Fault {
	oldDir := path.Dir(v.RelPath)
	if oldDir == "." {
		return fault(fmt.Sprintf("lab: %s keeps its files in the root of %s; relocating it would copy the whole datastore", vm.Name, src.Name),
			&types.NotSupported{})
	}
	folder := vm.Name
	for i := 1; ; i++ {
		if _, err := os.Stat(filepath.Join(dst.ContentDir, folder)); os.IsNotExist(err) {
			break
		}
		folder = fmt.Sprintf("%s_%d", vm.Name, i)
	}
	from, to := filepath.Join(src.ContentDir, oldDir), filepath.Join(dst.ContentDir, folder)
	if err := copyTree(from, to); err != nil {
		_ = os.RemoveAll(to)
		return fault("copying "+oldDir+": "+err.Error(), &types.CannotCreateFile{})
	}
	newRel := path.Join(folder, path.Base(v.RelPath))
	if vmx, err := readVmx(filepath.Join(to, path.Base(v.RelPath))); err == nil {
		vmx.set("uuid.location", uuidLocation(dst.volumeID(), newRel))
		_ = vmx.save()
	}
	oldPrefix := fmt.Sprintf("[%s] %s/", src.Name, oldDir)
	newPrefix := fmt.Sprintf("[%s] %s/", dst.Name, folder)
	fix := func(s string) string {
		if strings.HasPrefix(s, oldPrefix) {
			return newPrefix + strings.TrimPrefix(s, oldPrefix)
		}
		if s == strings.TrimSuffix(oldPrefix, "/") {
			return strings.TrimSuffix(newPrefix, "/")
		}
		return s
	}
	srcObj := simulator.Map.Get(src.Ref).(*simulator.Datastore)
	dstObj := simulator.Map.Get(dst.Ref).(*simulator.Datastore)
	simulator.Map.RemoveReference(srcObj, &srcObj.Vm, vm.Self)
	simulator.Map.AddReference(dstObj, &dstObj.Vm, vm.Self)
	simulator.Map.WithLock(vm, func() {
		rewritePaths(vm, fix, &[2]types.ManagedObjectReference{src.Ref, dst.Ref})
		files := vm.Config.Files
		stores := []types.ManagedObjectReference{dst.Ref}
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "config.files", Val: files},
			{Name: "summary.config.vmPathName", Val: files.VmPathName},
			{Name: "datastore", Val: stores},
			{Name: "config.hardware.device", Val: vm.Config.Hardware.Device},
		})
	})
	v.Datastore, v.RelPath = dst.Ref.Value, newRel
	v.VmxPath = fmt.Sprintf("[%s] %s", dst.Name, newRel)
	_ = os.RemoveAll(from) // a move: the source folder goes
	return nil
}
