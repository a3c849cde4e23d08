package main

// Virtual machines on lab datastores: registration that reads the .vmx (name, CPU,
// memory, NICs, disks), the "moved or copied" question on power-on, and simulated guests
// whose VMware Tools start (or never start) after power-on.

import (
	"fmt"
	"log"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

type vmState struct {
	Ref        types.ManagedObjectReference
	Datastore  string // Datastore moref value
	VmxPath    string // "[ds] dir/name.vmx"
	RelPath    string // "dir/name.vmx"
	IP         string // address the guest reports once running (vmx guestinfo.sr-lab.ip)
	DHCP       bool   // the guest has the address from DHCP: none without a connected NIC
	PowerGen   int
	Pending    *simulator.Task // power-on task waiting for an answer
	ToolsState string          // "running" or "notRunning"
}

func (v *vmState) obj() *simulator.VirtualMachine {
	vm, _ := simulator.Map.Get(v.Ref).(*simulator.VirtualMachine)
	return vm
}

func (v *vmState) name() string {
	if vm := v.obj(); vm != nil {
		return vm.Name
	}
	return v.Ref.Value
}

func (v *vmState) hostName(l *Lab) string {
	vm := v.obj()
	if vm == nil || vm.Runtime.Host == nil {
		return ""
	}
	if h := l.hostByRef[vm.Runtime.Host.Value]; h != nil {
		return h.Name
	}
	return ""
}

type guestRule struct {
	Match  string   `json:"match"`
	Tools  string   `json:"tools"` // "normal" or "never"
	DelayS *float64 `json:"delay_s,omitempty"`
}

func (l *Lab) registerVMOverrides(s *soapLayer) {
	s.handle("Folder", "RegisterVM_Task", l.opRegisterVM)
	s.handle("VirtualMachine", "PowerOnVM_Task", l.opPowerOn)
	s.handle("VirtualMachine", "AnswerVM", l.opAnswerVM)
	s.handle("VirtualMachine", "PowerOffVM_Task", l.opPowerOff)
	s.handle("VirtualMachine", "ShutdownGuest", l.opShutdownGuest)
	s.handle("VirtualMachine", "UnregisterVM", l.opUnregisterVM)
	s.handle("VirtualMachine", "ReconfigVM_Task", l.opReconfigure)
}

// opReconfigure is the simulator's ReconfigVM_Task, after dropping from the VM's file
// layout the files of datastores its host no longer sees (left by disks removed earlier):
// the simulator's storage accounting would otherwise fail on them.
func (l *Lab) opReconfigure(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.ReconfigVM_Task)
	l.mu.Lock()
	defer l.mu.Unlock()
	vm, _ := simulator.Map.Get(c.method.This).(*simulator.VirtualMachine)
	if vm == nil {
		return nil, fault("virtual machine not found", &types.ManagedObjectNotFound{Obj: c.method.This})
	}
	v, _ := l.vmFor(vm.Self)
	before := nicLinks(vm)
	ref, f := l.simReconfigure(vm, req.Spec)
	if f != nil {
		return nil, f
	}
	l.syncDatastoreUse(vm)
	if v != nil && v.ToolsState == "running" && vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
		l.setGuest(v, vm, true) // the guest sees its NICs' links change
		if nicLinks(vm) != before {
			l.checkIPConflict(v, vm)
		}
	}
	return ref, nil
}

// simReconfigure runs the simulator's ReconfigVM_Task on vm, with the disks it cannot
// handle masked (l.mu held). It returns the task (named as vCenter names it).
func (l *Lab) simReconfigure(vm *simulator.VirtualMachine, spec types.VirtualMachineConfigSpec) (types.ManagedObjectReference, *soap.Fault) {
	simulator.Map.WithLock(vm, func() { pruneLayout(vm) })
	var res soap.HasFault
	if f := l.invoke(vm, func(ctx *simulator.Context) {
		restore := l.maskSpecialDisks(vm, &spec)
		ok := false
		defer func() { restore(ok) }()
		res = vm.ReconfigVMTask(ctx, &types.ReconfigVM_Task{This: vm.Self, Spec: spec})
		if res.Fault() == nil {
			t, isTask := simulator.Map.Get(res.(*methods.ReconfigVM_TaskBody).Res.Returnval).(*simulator.Task)
			ok = isTask && t.Info.Error == nil
		}
	}); f != nil {
		return types.ManagedObjectReference{}, f
	}
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
	})
	if f := res.Fault(); f != nil {
		return types.ManagedObjectReference{}, f
	}
	ref := res.(*methods.ReconfigVM_TaskBody).Res.Returnval
	nameSimulatorTask(ref, vm.Self, "VirtualMachine.ReconfigVM_Task")
	return ref, nil // a failed reconfiguration is reported by its task
}

// nicLinks describes vm's NICs' networks and link states, to tell a change.
func nicLinks(vm *simulator.VirtualMachine) string {
	var b strings.Builder
	for _, d := range vm.Config.Hardware.Device {
		if nic, ok := d.(types.BaseVirtualEthernetCard); ok {
			card := nic.GetVirtualEthernetCard()
			network := ""
			if nb, ok := card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
				network = nb.DeviceName
			}
			fmt.Fprintf(&b, "%d:%s:%v;", card.Key, network, card.Connectable != nil && card.Connectable.Connected)
		}
	}
	return b.String()
}

// syncDatastoreUse makes vm.datastore, and the vm list of each lab datastore, name exactly
// the datastores that hold vm's .vmx or one of its disks, as vCenter keeps them (the
// simulator sets them at registration only) (l.mu held).
func (l *Lab) syncDatastoreUse(vm *simulator.VirtualMachine) {
	var vmx object.DatastorePath
	vmx.FromString(vm.Config.Files.VmPathName)
	var uses []types.ManagedObjectReference
	for _, ref := range vm.Datastore {
		if _, ours := l.datastores[ref.Value]; !ours {
			uses = append(uses, ref) // the simulator's own datastores stay as they were
		}
	}
	for _, id := range sortedKeys(l.datastores) {
		st := l.datastores[id]
		obj, _ := simulator.Map.Get(st.Ref).(*simulator.Datastore)
		if obj == nil {
			continue
		}
		listed := simulator.FindReference(obj.Vm, vm.Self) != nil
		if st.Name == vmx.Datastore || hasDiskOn(vm, st) {
			uses = append(uses, st.Ref)
			if !listed {
				simulator.Map.AppendReference(obj, &obj.Vm, vm.Self)
			}
		} else if listed {
			simulator.Map.RemoveReference(obj, &obj.Vm, vm.Self)
		}
	}
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "datastore", Val: uses}})
	})
}

// pruneLayout drops vm's layout files on datastores its host does not see (vm's lock held).
func pruneLayout(vm *simulator.VirtualMachine) {
	if vm.LayoutEx == nil || vm.Runtime.Host == nil {
		return
	}
	hs, _ := simulator.Map.Get(*vm.Runtime.Host).(*simulator.HostSystem)
	if hs == nil {
		return
	}
	kept := vm.LayoutEx.File[:0]
	for _, f := range vm.LayoutEx.File {
		var p object.DatastorePath
		if p.FromString(f.Name) && simulator.Map.FindByName(p.Datastore, hs.Datastore) == nil {
			continue
		}
		kept = append(kept, f)
	}
	vm.LayoutEx.File = kept
}

// invoke calls a simulator method the way the simulator's own dispatcher does: holding
// the object's lock, with the object as the caller. A panic in the simulator becomes a
// SystemError fault instead of a dropped connection.
func (l *Lab) invoke(obj mo.Reference, fn func(ctx *simulator.Context)) (failed *soap.Fault) {
	ref := obj.Reference()
	ctx := *l.ctx
	ctx.Caller = &ref
	simulator.Map.WithLock(obj, func() {
		defer func() {
			if p := recover(); p != nil {
				log.Printf("simulator panic on %s: %v\n%s", ref.Value, p, debug.Stack())
				failed = fault(fmt.Sprintf("lab: the simulator failed: %v", p), &types.SystemError{Reason: fmt.Sprint(p)})
			}
		}()
		fn(&ctx)
	})
	return failed
}

// onVM runs fn, with l.mu held, for the VM the call is made on.
func (l *Lab) onVM(c *callCtx, fn func(v *vmState, vm *simulator.VirtualMachine) (interface{}, *soap.Fault)) (interface{}, *soap.Fault) {
	ref := c.method.This
	l.mu.Lock()
	defer l.mu.Unlock()
	v, vm := l.vmFor(ref)
	if v == nil || vm == nil {
		return nil, fault("virtual machine not found", &types.ManagedObjectNotFound{Obj: ref})
	}
	return fn(v, vm)
}

// vmFor returns the lab's record of the VM ref and the simulator's object (l.mu held). A
// VM the simulator made itself (a clone, say) gets a record on first use when its .vmx is
// on a lab datastore; otherwise the record is nil.
func (l *Lab) vmFor(ref types.ManagedObjectReference) (*vmState, *simulator.VirtualMachine) {
	vm, _ := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if vm == nil {
		return nil, nil
	}
	if v := l.vms[ref.Value]; v != nil {
		return v, vm
	}
	if vm.Config == nil {
		return nil, vm
	}
	var p object.DatastorePath
	if !p.FromString(vm.Config.Files.VmPathName) || p.Path == "" {
		return nil, vm
	}
	ds := l.datastoreByName(p.Datastore)
	if ds == nil {
		return nil, vm
	}
	v := &vmState{Ref: ref, Datastore: ds.Ref.Value, VmxPath: vm.Config.Files.VmPathName,
		RelPath: p.Path, ToolsState: "notRunning"}
	if vmx, err := readVmx(filepath.Join(ds.ContentDir, p.Path)); err == nil {
		v.IP, v.DHCP = vmx.get("guestinfo.sr-lab.ip"), truthy(vmx.get("guestinfo.sr-lab.dhcp"))
	}
	l.vms[ref.Value] = v
	return v, vm
}

// simPowerOff powers vm off in the simulator and returns the finished task (l.mu held).
func (l *Lab) simPowerOff(v *vmState, vm *simulator.VirtualMachine) (types.ManagedObjectReference, *soap.Fault) {
	var res soap.HasFault
	if f := l.invoke(vm, func(ctx *simulator.Context) {
		res = vm.PowerOffVMTask(ctx, &types.PowerOffVM_Task{This: vm.Self})
	}); f != nil {
		return types.ManagedObjectReference{}, f
	}
	if f := res.Fault(); f != nil {
		return types.ManagedObjectReference{}, f
	}
	ref := res.(*methods.PowerOffVM_TaskBody).Res.Returnval
	nameSimulatorTask(ref, vm.Self, "VirtualMachine.PowerOffVM_Task")
	_, f := taskOutcome(ref)
	if f == nil {
		l.stopGuest(v, vm)
	}
	return ref, f
}

func taskOutcome(ref types.ManagedObjectReference) (*simulator.Task, *soap.Fault) {
	task := simulator.Map.Get(ref).(*simulator.Task)
	if task.Info.Error != nil {
		return task, fault(task.Info.Error.LocalizedMessage, task.Info.Error.Fault)
	}
	return task, nil
}

// ---- registration ---------------------------------------------------------------------------

func (l *Lab) opRegisterVM(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.RegisterVM_Task)
	folderRef := c.method.This
	return l.runTask(folderRef, "Folder.RegisterVM_Task", func() (types.AnyType, *soap.Fault) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.registerVM(folderRef, req)
	}), nil
}

// registerVM registers the .vmx at req.Path (l.mu held).
func (l *Lab) registerVM(folderRef types.ManagedObjectReference, req *types.RegisterVM_Task) (types.AnyType, *soap.Fault) {
	if req.AsTemplate {
		return nil, fault("lab: registering templates is not modelled", &types.NotSupported{})
	}
	if req.Pool == nil {
		return nil, fault("a resource pool is required", &types.InvalidArgument{InvalidProperty: "pool"})
	}
	if f := l.checkPool(*req.Pool); f != nil {
		return nil, f
	}
	if _, ok := simulator.Map.Get(folderRef).(*simulator.Folder); !ok {
		return nil, fault("folder not found", &types.ManagedObjectNotFound{Obj: folderRef})
	}
	var p object.DatastorePath
	if !p.FromString(req.Path) || p.Path == "" {
		return nil, fault("invalid datastore path "+req.Path, &types.InvalidDatastorePath{DatastorePath: req.Path})
	}
	ds := l.datastoreByName(p.Datastore)
	if ds == nil {
		return nil, fault("datastore "+p.Datastore+" not found", &types.InvalidDatastore{Name: p.Datastore})
	}
	var h *hostState
	if req.Host != nil {
		h = l.hostByRef[req.Host.Value]
		if h == nil {
			return nil, fault("host not found", &types.InvalidArgument{InvalidProperty: "host"})
		}
	} else {
		for _, hn := range sortedKeys(ds.Mounts) {
			if ds.Mounts[hn].Accessible {
				h = l.hostByName[hn]
				break
			}
		}
	}
	if h == nil || ds.Mounts[h.Name] == nil || !ds.Mounts[h.Name].Accessible {
		return nil, fault(fmt.Sprintf("datastore %s is not accessible from the host", ds.Name), &types.InvalidDatastore{Name: ds.Name})
	}
	vmxFile := filepath.Join(ds.ContentDir, p.Path)
	vmx, err := readVmx(vmxFile)
	if err != nil {
		return nil, fault(fmt.Sprintf("file %s was not found", req.Path), &types.NotFound{})
	}
	canonical := fmt.Sprintf("[%s] %s", ds.Name, p.Path)
	for _, v := range l.vms {
		if v.Datastore == ds.Ref.Value && v.RelPath == p.Path {
			return nil, fault(fmt.Sprintf("%s is already registered as %s", canonical, v.name()), &types.AlreadyExists{Name: v.Ref.Value})
		}
	}
	name := req.Name
	if name == "" {
		name = vmx.get("displayName")
	}
	if name == "" {
		name = path.Base(path.Dir(p.Path))
	}
	folder := simulator.Map.Get(folderRef).(*simulator.Folder)
	if e := simulator.Map.FindByName(name, folder.ChildEntity); e != nil {
		return nil, fault(fmt.Sprintf("the name '%s' already exists", name), &types.DuplicateName{Name: name, Object: e.Reference()})
	}

	// The simulator opens <dir>/<registration name>.nvram and <dir>/vmware.log: register under
	// the nvram file's base name, then rename. ESXi itself creates both files when missing.
	dir := filepath.Dir(vmxFile)
	nvram := vmx.get("nvram")
	if nvram == "" {
		nvram = strings.TrimSuffix(filepath.Base(vmxFile), ".vmx") + ".nvram"
	}
	for _, f := range []string{filepath.Join(dir, nvram), filepath.Join(dir, "vmware.log")} {
		if _, err := os.Stat(f); os.IsNotExist(err) {
			_ = os.WriteFile(f, nil, 0o644)
		}
	}
	inner := &types.RegisterVM_Task{
		This: folderRef, Path: canonical, Name: strings.TrimSuffix(nvram, ".nvram"), Pool: req.Pool, Host: &h.Ref,
	}
	var res soap.HasFault
	if f := l.invoke(folder, func(ctx *simulator.Context) { res = folder.RegisterVMTask(ctx, inner) }); f != nil {
		return nil, f
	}
	if f := res.Fault(); f != nil {
		return nil, f
	}
	task, f := taskOutcome(res.(*methods.RegisterVM_TaskBody).Res.Returnval)
	if f != nil {
		return nil, f
	}
	vmRef := task.Info.Result.(types.ManagedObjectReference)
	vm := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	v := &vmState{Ref: vmRef, Datastore: ds.Ref.Value, VmxPath: canonical, RelPath: p.Path,
		IP: vmx.get("guestinfo.sr-lab.ip"), DHCP: truthy(vmx.get("guestinfo.sr-lab.dhcp")), ToolsState: "notRunning"}
	l.vms[vmRef.Value] = v
	l.applyVmx(v, vm, vmx, name)
	l.syncDatastoreUse(vm)
	l.syncConnection(v, vm)
	return vmRef, nil
}

// checkPool accepts a resource pool of the lab's cluster (l.mu held).
func (l *Lab) checkPool(ref types.ManagedObjectReference) *soap.Fault {
	rp, ok := simulator.Map.Get(ref).(*simulator.ResourcePool)
	if !ok {
		return fault("resource pool not found", &types.ManagedObjectNotFound{Obj: ref})
	}
	if rp.Owner != l.clusterRef {
		return fault(fmt.Sprintf("resource pool %s is not in cluster %s", rp.Name, l.cfg.Cluster),
			&types.InvalidArgument{InvalidProperty: "pool"})
	}
	return nil
}

var diskKey = regexp.MustCompile(`^(scsi|sata|nvme)(\d+):(\d+)\.filename$`)
var nicKey = regexp.MustCompile(`^ethernet(\d+)\.present$`)

// applyVmx gives the registered VM the name, sizing, NICs and disks its .vmx describes.
func (l *Lab) applyVmx(v *vmState, vm *simulator.VirtualMachine, vmx *vmxFile, name string) {
	changes := []types.PropertyChange{
		{Name: "name", Val: name},
		{Name: "config.name", Val: name},
		{Name: "summary.config.name", Val: name},
		{Name: "guestHeartbeatStatus", Val: types.ManagedEntityStatusGray},
		{Name: "summary.quickStats.guestHeartbeatStatus", Val: types.ManagedEntityStatusGray},
	}
	if n, err := strconv.Atoi(vmx.get("numvcpus")); err == nil && n > 0 {
		changes = append(changes, types.PropertyChange{Name: "config.hardware.numCPU", Val: int32(n)},
			types.PropertyChange{Name: "summary.config.numCpu", Val: int32(n)})
	}
	if n, err := strconv.Atoi(vmx.get("memsize")); err == nil && n > 0 {
		changes = append(changes, types.PropertyChange{Name: "config.hardware.memoryMB", Val: int32(n)},
			types.PropertyChange{Name: "summary.config.memorySizeMB", Val: int32(n)})
	}
	if a := vmx.get("annotation"); a != "" {
		changes = append(changes, types.PropertyChange{Name: "config.annotation", Val: a},
			types.PropertyChange{Name: "summary.config.annotation", Val: a})
	}
	if u := vmxUUIDToConfig(vmx.get("uuid.bios")); u != "" {
		changes = append(changes, types.PropertyChange{Name: "config.uuid", Val: u},
			types.PropertyChange{Name: "summary.config.uuid", Val: u})
	}
	simulator.Map.WithLock(vm, func() { simulator.Map.Update(vm, changes) })

	var nics, disks []types.BaseVirtualDeviceConfigSpec
	keys := make([]string, 0, len(vmx.index))
	for k := range vmx.index {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if m := nicKey.FindStringSubmatch(k); m != nil && truthy(vmx.get(k)) {
			nics = append(nics, l.nicSpec(vmx, "ethernet"+m[1]))
		}
	}
	vmDir := path.Dir(v.RelPath)
	vmxDs := l.datastores[v.Datastore]
	hs := vmHost(vm)
	actual := map[int32]types.BaseVirtualDeviceBackingInfo{} // unit -> backing the simulator cannot take
	for _, k := range keys {
		m := diskKey.FindStringSubmatch(k)
		if m == nil || !truthy(vmx.get(m[1]+m[2]+":"+m[3]+".present")) {
			continue
		}
		file := vmx.get(k)
		if !strings.HasSuffix(strings.ToLower(file), ".vmdk") {
			continue
		}
		unit, _ := strconv.Atoi(m[3])
		f := l.resolveDiskName(vmxDs, vmDir, file)
		backing, sizeKB := l.diskBacking(f)
		if !simulatorCanHandle(backing, hs) || !simulatorFindsFiles(f) {
			actual[int32(unit)] = backing // registered as is; power-on will tell
			backing = placeholder(vm)
		}
		disks = append(disks, diskSpec(backing, int32(unit), sizeKB))
	}
	if len(nics) > 0 {
		l.reconfigure(vm, types.VirtualMachineConfigSpec{DeviceChange: nics})
	}
	if len(disks) > 0 {
		devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
		ctrl, _ := devices.CreateSCSIController("pvscsi")
		l.reconfigure(vm, types.VirtualMachineConfigSpec{DeviceChange: []types.BaseVirtualDeviceConfigSpec{
			&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: ctrl},
		}})
		scsi := object.VirtualDeviceList(vm.Config.Hardware.Device).SelectByType((*types.ParaVirtualSCSIController)(nil))
		if len(scsi) > 0 {
			key := scsi[0].GetVirtualDevice().Key
			for _, d := range disks {
				disk := d.GetVirtualDeviceConfigSpec().Device.(*types.VirtualDisk)
				disk.ControllerKey = key
			}
			l.reconfigure(vm, types.VirtualMachineConfigSpec{DeviceChange: disks})
		}
	}
	if len(actual) > 0 {
		simulator.Map.WithLock(vm, func() {
			for _, d := range vm.Config.Hardware.Device {
				disk, ok := d.(*types.VirtualDisk)
				if !ok || disk.UnitNumber == nil {
					continue
				}
				if b := actual[*disk.UnitNumber]; b != nil {
					disk.Backing = b
				}
			}
			simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
		})
	}
}

func (l *Lab) nicSpec(vmx *vmxFile, prefix string) types.BaseVirtualDeviceConfigSpec {
	network := vmx.get(prefix + ".networkName")
	dc := simulator.Map.Get(l.dcRef).(*simulator.Datacenter)
	if network == "" || simulator.Map.FindByName(network, dc.Network) == nil {
		network = l.cfg.Network
	}
	start := true
	if vmx.has(prefix + ".startConnected") {
		start = truthy(vmx.get(prefix + ".startConnected"))
	}
	card := types.VirtualEthernetCard{
		VirtualDevice: types.VirtualDevice{
			Key:         -1,
			Backing:     &types.VirtualEthernetCardNetworkBackingInfo{VirtualDeviceDeviceBackingInfo: types.VirtualDeviceDeviceBackingInfo{DeviceName: network}},
			Connectable: &types.VirtualDeviceConnectInfo{StartConnected: start, Connected: false, AllowGuestControl: true},
		},
		AddressType: "generated",
		MacAddress:  vmx.get(prefix + ".generatedAddress"),
	}
	var dev types.BaseVirtualDevice = &types.VirtualVmxnet3{VirtualVmxnet: types.VirtualVmxnet{VirtualEthernetCard: card}}
	if strings.EqualFold(vmx.get(prefix+".virtualDev"), "e1000") {
		dev = &types.VirtualE1000{VirtualEthernetCard: card}
	}
	return &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: dev}
}

func diskSpec(backing types.BaseVirtualDeviceBackingInfo, unit int32, capacityKB int64) types.BaseVirtualDeviceConfigSpec {
	if capacityKB <= 0 {
		capacityKB = 1024 * 1024
	}
	disk := &types.VirtualDisk{
		VirtualDevice: types.VirtualDevice{Key: -1, UnitNumber: types.NewInt32(unit), Backing: backing},
		CapacityInKB:  capacityKB,
	}
	return &types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: disk}
}

func (l *Lab) reconfigure(vm *simulator.VirtualMachine, spec types.VirtualMachineConfigSpec) {
	ref, f := l.simReconfigure(vm, spec)
	if f != nil {
		logf("reconfigure %s: %s", vm.Name, f.String)
		return
	}
	if _, f := taskOutcome(ref); f != nil {
		logf("reconfigure %s: %s %T", vm.Name, f.String, f.Detail.Fault)
	}
}

// ---- power, question, guest -----------------------------------------------------------------

func (l *Lab) opPowerOn(c *callCtx) (interface{}, *soap.Fault) {
	ref := c.method.This
	// l.mu is held from the checks through the power-on (runTask runs fn synchronously), so
	// no unmount or unregister can slip in between.
	l.mu.Lock()
	defer l.mu.Unlock()
	v, vm := l.vmFor(ref)
	if v == nil || vm == nil {
		return nil, fault("virtual machine not found", &types.ManagedObjectNotFound{Obj: ref})
	}
	if v.Pending != nil {
		return nil, fault("a power-on is waiting for an answer to a question", &types.TaskInProgress{Task: v.Pending.Self})
	}
	ds := l.datastores[v.Datastore]
	hn := v.hostName(l)
	var precheck *soap.Fault
	switch {
	case vm.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn:
		precheck = fault("the virtual machine is already powered on", &types.InvalidPowerState{
			RequestedState: types.VirtualMachinePowerStatePoweredOn, ExistingState: vm.Runtime.PowerState})
	case ds == nil || ds.Mounts[hn] == nil || !ds.Mounts[hn].Accessible:
		precheck = fault(fmt.Sprintf("the datastore of %s is not accessible from host %s", vm.Name, hn), &types.InvalidDatastore{})
	}
	if precheck != nil {
		return l.runTask(ref, "VirtualMachine.PowerOnVM_Task", func() (types.AnyType, *soap.Fault) { return nil, precheck }), nil
	}
	vmx, err := readVmx(filepath.Join(ds.ContentDir, v.RelPath))
	if err != nil {
		return l.runTask(ref, "VirtualMachine.PowerOnVM_Task", func() (types.AnyType, *soap.Fault) {
			return nil, fault("cannot read "+v.VmxPath+": "+err.Error(), &types.FileNotFound{})
		}), nil
	}
	want := uuidLocation(ds.volumeID(), v.RelPath)
	have := vmx.get("uuid.location")
	if have != "" && have != want {
		return l.askMovedOrCopied(v, vm), nil
	}
	return l.runTask(ref, "VirtualMachine.PowerOnVM_Task", func() (types.AnyType, *soap.Fault) {
		if f := l.powerOn(v, vm); f != nil {
			return nil, f
		}
		if have == "" { // ESXi records where the VM first ran once it is running
			vmx.set("uuid.location", want)
			_ = vmx.save()
		}
		return nil, nil
	}), nil
}

const questionText = "This virtual machine might have been moved or copied.\n" +
	"In order to configure certain management and networking features, VMware ESX needs to know if this virtual machine was moved or copied.\n\n" +
	"If you don't know, answer \"I Copied It\".\n"

// askMovedOrCopied leaves the power-on task running with the msg.uuid.altered question
// set on the VM, until AnswerVM (l.mu held).
func (l *Lab) askMovedOrCopied(v *vmState, vm *simulator.VirtualMachine) types.ManagedObjectReference {
	task := l.startTask(vm.Self, "VirtualMachine.PowerOnVM_Task")
	v.Pending = task
	q := &types.VirtualMachineQuestionInfo{
		Id:   fmt.Sprintf("_vmx%d", 1+l.nextID),
		Text: "msg.uuid.altered:" + questionText,
		Choice: types.ChoiceOption{
			OptionType: types.OptionType{ValueIsReadonly: types.NewBool(false)},
			ChoiceInfo: []types.BaseElementDescription{
				&types.ElementDescription{Description: types.Description{Label: "button.uuid.cancel", Summary: "Cancel"}, Key: "0"},
				&types.ElementDescription{Description: types.Description{Label: "button.uuid.movedTheVM", Summary: "I Moved It"}, Key: "1"},
				&types.ElementDescription{Description: types.Description{Label: "button.uuid.copiedTheVM", Summary: "I Copied It"}, Key: "2"},
			},
			DefaultIndex: 2,
		},
		Message: []types.VirtualMachineMessage{{Id: "msg.uuid.altered", Text: questionText}},
	}
	l.nextID++
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "runtime.question", Val: q},
			{Name: "summary.runtime.question", Val: q},
		})
	})
	return task.Self
}

func (l *Lab) opAnswerVM(c *callCtx) (interface{}, *soap.Fault) {
	req := c.method.Body.(*types.AnswerVM)
	return l.onVM(c, func(v *vmState, vm *simulator.VirtualMachine) (interface{}, *soap.Fault) {
		q := vm.Runtime.Question
		if q == nil || q.Id != req.QuestionId || v.Pending == nil {
			return nil, fault(fmt.Sprintf("question %q is not pending on %s", req.QuestionId, vm.Name), &types.ConcurrentAccess{})
		}
		label := ""
		for _, ci := range q.Choice.ChoiceInfo {
			if d := ci.GetElementDescription(); d.Key == req.AnswerChoice {
				label = d.Label
			}
		}
		if label == "" {
			return nil, fault(fmt.Sprintf("%q is not a choice of question %s (answer with the choice key, not its label)", req.AnswerChoice, q.Id),
				&types.InvalidArgument{InvalidProperty: "answerChoice"})
		}
		simulator.Map.WithLock(vm, func() {
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "runtime.question", Val: nil},
				{Name: "summary.runtime.question", Val: nil},
			})
		})
		task := v.Pending
		v.Pending = nil
		var outcome *soap.Fault
		if label == "button.uuid.cancel" {
			outcome = fault("the power-on was cancelled: the question was answered Cancel", &types.RequestCanceled{})
		} else if outcome = l.rewriteIdentity(v, vm, label == "button.uuid.copiedTheVM"); outcome == nil {
			outcome = l.powerOn(v, vm)
		}
		finishTask(task, outcome)
		return nil, nil
	})
}

// rewriteIdentity records the answer in the .vmx: the new location, and for a copy a new
// BIOS uuid and new MAC addresses (l.mu held).
func (l *Lab) rewriteIdentity(v *vmState, vm *simulator.VirtualMachine, copied bool) *soap.Fault {
	ds := l.datastores[v.Datastore]
	vmx, err := readVmx(filepath.Join(ds.ContentDir, v.RelPath))
	if err != nil {
		return fault("cannot read "+v.VmxPath, &types.FileNotFound{})
	}
	vmx.set("uuid.location", uuidLocation(ds.volumeID(), v.RelPath))
	if copied {
		bios := newVmxBiosUUID()
		vmx.set("uuid.bios", bios)
		var changes []types.PropertyChange
		simulator.Map.WithLock(vm, func() {
			for _, d := range vm.Config.Hardware.Device {
				if nic, ok := d.(types.BaseVirtualEthernetCard); ok {
					card := nic.GetVirtualEthernetCard()
					card.MacAddress = "00:50:56:" + randomHex(1) + ":" + randomHex(1) + ":" + randomHex(1)
					if card.UnitNumber != nil {
						vmx.set(fmt.Sprintf("ethernet%d.generatedAddress", *card.UnitNumber-7), card.MacAddress)
					}
				}
			}
			u := vmxUUIDToConfig(bios)
			changes = append(changes,
				types.PropertyChange{Name: "config.uuid", Val: u},
				types.PropertyChange{Name: "summary.config.uuid", Val: u},
				types.PropertyChange{Name: "config.hardware.device", Val: vm.Config.Hardware.Device})
			simulator.Map.Update(vm, changes)
		})
	}
	if err := vmx.save(); err != nil {
		return fault("cannot write "+v.VmxPath+": "+err.Error(), &types.FileFault{})
	}
	return nil
}

// powerOn opens the VM's disks (FileNotFound if one cannot be), powers it on in the
// simulator, records the production files it opened, connects the NICs marked
// start-connected and starts the guest's clock (l.mu held).
func (l *Lab) powerOn(v *vmState, vm *simulator.VirtualMachine) *soap.Fault {
	h := l.hostByName[v.hostName(l)]
	if h == nil {
		return fault(vm.Name+" has no host", &types.InvalidState{})
	}
	opened, f := l.openDisks(v, vm, h)
	if f != nil {
		return f
	}
	var res soap.HasFault
	if f := l.invoke(vm, func(ctx *simulator.Context) {
		res = vm.PowerOnVMTask(ctx, &types.PowerOnVM_Task{This: vm.Self})
	}); f != nil {
		return f
	}
	if f := res.Fault(); f != nil {
		return f
	}
	if _, f := taskOutcome(res.(*methods.PowerOnVM_TaskBody).Res.Returnval); f != nil {
		return f
	}
	for _, e := range opened {
		l.record(e)
	}
	l.setNics(vm, true)
	l.startGuest(v)
	return nil
}

func (l *Lab) setNics(vm *simulator.VirtualMachine, poweredOn bool) {
	simulator.Map.WithLock(vm, func() {
		for _, d := range vm.Config.Hardware.Device {
			if nic, ok := d.(types.BaseVirtualEthernetCard); ok {
				if c := nic.GetVirtualEthernetCard().Connectable; c != nil {
					c.Connected = poweredOn && c.StartConnected
				}
			}
		}
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "config.hardware.device", Val: vm.Config.Hardware.Device}})
	})
}

func (l *Lab) guestRuleFor(name string) guestRule {
	rule := guestRule{Tools: "normal"}
	for _, r := range l.guestRules {
		if ok, _ := path.Match(r.Match, name); ok {
			rule = r
		}
	}
	return rule
}

// startGuest schedules VMware Tools to report running after the configured delay (l.mu held).
func (l *Lab) startGuest(v *vmState) {
	v.PowerGen++
	gen := v.PowerGen
	rule := l.guestRuleFor(v.name())
	if rule.Tools == "never" {
		return
	}
	delay := l.cfg.Guest.ToolsDelayS
	if rule.DelayS != nil {
		delay = *rule.DelayS
	}
	go func() {
		time.Sleep(time.Duration(delay * float64(time.Second)))
		l.mu.Lock()
		defer l.mu.Unlock()
		vm := v.obj()
		if v.PowerGen != gen || l.vms[v.Ref.Value] != v || vm == nil ||
			vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			return
		}
		l.setGuest(v, vm, true)
		l.checkIPConflict(v, vm)
	}()
}

// setGuest publishes the guest's tools, heartbeat and IP as a running (or stopped) guest.
func (l *Lab) setGuest(v *vmState, vm *simulator.VirtualMachine, running bool) {
	tools, toolsStatus, state, beat := "guestToolsNotRunning", types.VirtualMachineToolsStatusToolsNotRunning, "notRunning", types.ManagedEntityStatusGray
	if running {
		tools, toolsStatus, state, beat = "guestToolsRunning", types.VirtualMachineToolsStatusToolsOk, "running", types.ManagedEntityStatusGreen
		v.ToolsState = "running"
	} else {
		v.ToolsState = "notRunning"
	}
	simulator.Map.WithLock(vm, func() {
		ip := ""
		var nets []types.GuestNicInfo
		for _, d := range vm.Config.Hardware.Device {
			nic, ok := d.(types.BaseVirtualEthernetCard)
			if !ok {
				continue
			}
			card := nic.GetVirtualEthernetCard()
			connected := card.Connectable != nil && card.Connectable.Connected
			info := types.GuestNicInfo{MacAddress: card.MacAddress, Connected: connected, DeviceConfigId: card.Key}
			if b, ok := card.Backing.(*types.VirtualEthernetCardNetworkBackingInfo); ok {
				info.Network = b.DeviceName
			}
			// a static address is configured in the guest: tools report it even with the
			// link down (an isolated NIC); a DHCP guest has one only through a connected NIC
			if running && v.IP != "" && ip == "" && (!v.DHCP || connected) {
				ip = v.IP
				info.IpAddress = []string{ip}
			}
			nets = append(nets, info)
		}
		host := ""
		if running {
			host = strings.ToLower(vm.Name)
		}
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "guest.toolsRunningStatus", Val: tools},
			{Name: "guest.toolsStatus", Val: toolsStatus},
			{Name: "guest.toolsVersionStatus2", Val: "guestToolsCurrent"},
			{Name: "guest.guestState", Val: state},
			{Name: "guest.ipAddress", Val: ip},
			{Name: "guest.hostName", Val: host},
			{Name: "guest.net", Val: nets},
			{Name: "guestHeartbeatStatus", Val: beat},
			{Name: "summary.quickStats.guestHeartbeatStatus", Val: beat},
			{Name: "summary.guest.toolsRunningStatus", Val: tools},
			{Name: "summary.guest.toolsStatus", Val: toolsStatus},
			{Name: "summary.guest.ipAddress", Val: ip},
			{Name: "summary.guest.hostName", Val: host},
		})
	})
}

func (l *Lab) stopGuest(v *vmState, vm *simulator.VirtualMachine) {
	v.PowerGen++
	l.setNics(vm, false)
	l.setGuest(v, vm, false)
}

func (l *Lab) opPowerOff(c *callCtx) (interface{}, *soap.Fault) {
	return l.onVM(c, func(v *vmState, vm *simulator.VirtualMachine) (interface{}, *soap.Fault) {
		ref, f := l.simPowerOff(v, vm)
		if ref.Value == "" {
			return nil, f
		}
		return ref, nil // a failed power-off is reported by its task
	})
}
func (l *Lab) opShutdownGuest(c *callCtx) (interface{}, *soap.Fault) {
	return l.onVM(c, func(v *vmState, vm *simulator.VirtualMachine) (interface{}, *soap.Fault) {
		if vm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn {
			return nil, fault("the virtual machine is not powered on", &types.InvalidPowerState{
				RequestedState: types.VirtualMachinePowerStatePoweredOff, ExistingState: vm.Runtime.PowerState})
		}
		if v.ToolsState != "running" {
			return nil, fault("VMware Tools is not running in "+vm.Name, &types.ToolsUnavailable{})
		}
		_, f := l.simPowerOff(v, vm)
		return nil, f
	})
}
func (l *Lab) opUnregisterVM(c *callCtx) (interface{}, *soap.Fault) {
	ref := c.method.This
	l.mu.Lock()
	defer l.mu.Unlock()
	vm, _ := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if vm == nil {
		return nil, fault("virtual machine not found", &types.ManagedObjectNotFound{Obj: ref})
	}
	var res soap.HasFault
	if f := l.invoke(vm, func(ctx *simulator.Context) {
		res = vm.UnregisterVM(ctx, &types.UnregisterVM{This: ref})
	}); f != nil {
		return nil, f
	}
	if f := res.Fault(); f != nil {
		return nil, f
	}
	if v := l.vms[ref.Value]; v != nil {
		v.PowerGen++
		if v.Pending != nil {
			finishTask(v.Pending, fault("the virtual machine was unregistered", &types.RequestCanceled{}))
			v.Pending = nil
		}
		delete(l.vms, ref.Value)
	}
	return nil, nil
}

// renameVmPaths rewrites "[old] ..." datastore paths of registered VMs after a datastore
// rename, as vCenter does (l.mu held).
func (l *Lab) renameVmPaths(oldName, newName string) {
	oldPrefix, newPrefix := "["+oldName+"]", "["+newName+"]"
	fix := func(s string) string {
		if strings.HasPrefix(s, oldPrefix) {
			return newPrefix + strings.TrimPrefix(s, oldPrefix)
		}
		return s
	}
	for _, v := range l.vms {
		if !strings.HasPrefix(v.VmxPath, oldPrefix) {
			continue
		}
		v.VmxPath = fix(v.VmxPath)
		vm := v.obj()
		if vm == nil {
			continue
		}
		simulator.Map.WithLock(vm, func() {
			rewritePaths(vm, fix, nil)
			simulator.Map.Update(vm, []types.PropertyChange{
				{Name: "config.files", Val: vm.Config.Files},
				{Name: "summary.config.vmPathName", Val: vm.Config.Files.VmPathName},
			})
		})
	}
}

// rewritePaths applies fix to every datastore path of vm (files, disk backings, layout)
// and, when move is given, re-points disk backings from one datastore to another
// (vm's lock held).
func rewritePaths(vm *simulator.VirtualMachine, fix func(string) string, move *[2]types.ManagedObjectReference) {
	files := &vm.Config.Files
	files.VmPathName = fix(files.VmPathName)
	files.SnapshotDirectory = fix(files.SnapshotDirectory)
	files.SuspendDirectory = fix(files.SuspendDirectory)
	files.LogDirectory = fix(files.LogDirectory)
	for _, d := range vm.Config.Hardware.Device {
		if b, ok := d.GetVirtualDevice().Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
			info := b.GetVirtualDeviceFileBackingInfo()
			info.FileName = fix(info.FileName)
			if move != nil && info.Datastore != nil && *info.Datastore == move[0] {
				ref := move[1]
				info.Datastore = &ref
			}
		}
	}
	if vm.LayoutEx != nil {
		for i := range vm.LayoutEx.File {
			vm.LayoutEx.File[i].Name = fix(vm.LayoutEx.File[i].Name)
		}
	}
}

// ---- connection state and guest IP conflicts --------------------------------------------------

// syncConnection sets vm's runtime.connectionState from its files: inaccessible while the
// datastore of its .vmx is not accessible from its host, connected otherwise (l.mu held).
func (l *Lab) syncConnection(v *vmState, vm *simulator.VirtualMachine) {
	state := types.VirtualMachineConnectionStateInaccessible
	if ds := l.datastores[v.Datastore]; ds != nil {
		if m := ds.Mounts[v.hostName(l)]; m != nil && m.Accessible {
			state = types.VirtualMachineConnectionStateConnected
		}
	}
	if vm.Runtime.ConnectionState == state {
		return
	}
	simulator.Map.WithLock(vm, func() {
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "runtime.connectionState", Val: state},
			{Name: "summary.runtime.connectionState", Val: state},
		})
	})
}

// syncConnections is syncConnection for every lab VM (l.mu held).
func (l *Lab) syncConnections() {
	for _, id := range sortedKeys(l.vms) {
		v := l.vms[id]
		if vm := v.obj(); vm != nil {
			l.syncConnection(v, vm)
		}
	}
}

// checkIPConflict records a guest_ip_conflict for each address vm's guest reports on a
// connected NIC that another powered-on guest reports on a connected NIC of the same
// network, as a restored twin on a production network does (l.mu held).
func (l *Lab) checkIPConflict(v *vmState, vm *simulator.VirtualMachine) {
	type link struct{ network, ip string }
	mine := map[link]bool{}
	for _, n := range vm.Guest.Net {
		for _, ip := range n.IpAddress {
			if n.Connected {
				mine[link{n.Network, ip}] = true
			}
		}
	}
	if len(mine) == 0 {
		return
	}
	for _, id := range sortedKeys(l.vms) {
		other := l.vms[id]
		ovm := other.obj()
		if other == v || ovm == nil || ovm.Runtime.PowerState != types.VirtualMachinePowerStatePoweredOn ||
			other.ToolsState != "running" || ovm.Guest == nil {
			continue
		}
		for _, n := range ovm.Guest.Net {
			for _, ip := range n.IpAddress {
				if n.Connected && mine[link{n.Network, ip}] {
					l.record(StorageEvent{Kind: "guest_ip_conflict", Host: v.hostName(l), VM: vm.Name,
						Detail: fmt.Sprintf("IP %s on network %s is also in use by VM %s", ip, n.Network, ovm.Name)})
				}
			}
		}
	}
}
