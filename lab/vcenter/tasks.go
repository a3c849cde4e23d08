package main

// vSphere tasks the lab creates: named as vCenter names them (info.name is the method,
// info.descriptionId "<type>.<vmodl method>"), listed in their entity's recentTask (and,
// through the simulator, in TaskManager.recentTask), and long-running tasks whose work
// happens after a delay (fault rules with duration_s).

import (
	"strings"
	"time"
	"unicode"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// entityRecentTasks is how many tasks an entity's recentTask keeps (vCenter keeps the
// recent ones, finished or not, for a while).
const entityRecentTasks = 10

// vmodlNames gives the vmodl name of the methods whose name is not their SOAP name
// without "_Task" (pyVmomi's method info has both).
var vmodlNames = map[string]string{
	"RelocateVM_Task":                      "relocate",
	"PowerOnVM_Task":                       "powerOn",
	"PowerOffVM_Task":                      "powerOff",
	"ReconfigVM_Task":                      "reconfigure",
	"CloneVM_Task":                         "clone",
	"RegisterVM_Task":                      "registerVm",
	"CopyDatastoreFile_Task":               "copy", // as vCenter reports it (vpx task list)
	"DeleteDatastoreFile_Task":             "delete",
	"MoveDatastoreFile_Task":               "move",
	"SearchDatastore_Task":                 "search",
	"SearchDatastoreSubFolders_Task":       "searchSubFolders",
	"ResignatureUnresolvedVmfsVolume_Task": "resignatureUnresolvedVmfsVolume",
	"CreateSnapshot_Task":                  "createSnapshot",
	"ResetVM_Task":                         "reset",
	"SuspendVM_Task":                       "suspend",
	"MigrateVM_Task":                       "migrate",
}

// describeTask returns a task's info.name and info.descriptionId for SOAP method method
// called on an object of type objType, e.g. ("RelocateVM_Task", "VirtualMachine.relocate").
func describeTask(objType, method string) (string, string) {
	id, ok := vmodlNames[method]
	if !ok {
		base := strings.TrimSuffix(method, "_Task")
		r := []rune(base)
		if len(r) > 0 {
			r[0] = unicode.ToLower(r[0])
		}
		id = string(r)
	}
	return method, objType + "." + id
}

// splitOp splits "VirtualMachine.RelocateVM_Task" into its type and method.
func splitOp(op string) (string, string) {
	i := strings.IndexByte(op, '.')
	if i < 0 {
		return "", op
	}
	return op[:i], op[i+1:]
}

// newTask creates a task about entity for op ("<type>.<SOAP method>") with vCenter's name
// and descriptionId, lists it in the entity's recentTask, and returns it (queued).
func (l *Lab) newTask(entity types.ManagedObjectReference, op string, run func(*simulator.Task) (types.AnyType, types.BaseMethodFault)) *simulator.Task {
	objType, method := splitOp(op)
	name, desc := describeTask(objType, method)
	task := simulator.CreateTask(entity, strings.TrimSuffix(name, "_Task")+"Task", run)
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.name", Val: name},
		{Name: "info.descriptionId", Val: desc},
	})
	addRecentTask(entity, task.Self)
	return task
}

func addRecentTask(entity, task types.ManagedObjectReference) {
	obj, ok := simulator.Map.Get(entity).(mo.Entity)
	if !ok {
		return
	}
	simulator.Map.WithLock(obj, func() {
		recent := append(append([]types.ManagedObjectReference(nil), obj.Entity().RecentTask...), task)
		if len(recent) > entityRecentTasks {
			recent = recent[len(recent)-entityRecentTasks:]
		}
		simulator.Map.Update(obj, []types.PropertyChange{{Name: "recentTask", Val: recent}})
	})
}

func dropRecentTask(entity, task types.ManagedObjectReference) {
	if obj, ok := simulator.Map.Get(entity).(mo.Entity); ok {
		simulator.Map.WithLock(obj, func() {
			recent := append([]types.ManagedObjectReference(nil), obj.Entity().RecentTask...)
			simulator.RemoveReference(&recent, task)
			simulator.Map.Update(obj, []types.PropertyChange{{Name: "recentTask", Val: recent}})
		})
	}
	if tm, ok := simulator.Map.Get(*simulator.Map.Get(vimServiceInstance).(*simulator.ServiceInstance).Content.TaskManager).(*simulator.TaskManager); ok {
		simulator.Map.WithLock(tm, func() {
			recent := append([]types.ManagedObjectReference(nil), tm.RecentTask...)
			simulator.RemoveReference(&recent, task)
			simulator.Map.Update(tm, []types.PropertyChange{{Name: "recentTask", Val: recent}})
		})
	}
}

var vimServiceInstance = types.ManagedObjectReference{Type: "ServiceInstance", Value: "ServiceInstance"}

// nameSimulatorTask gives a task the simulator made for op ("<type>.<SOAP method>") on
// entity vCenter's name and descriptionId, and lists it in the entity's recentTask.
func nameSimulatorTask(ref, entity types.ManagedObjectReference, op string) {
	task, ok := simulator.Map.Get(ref).(*simulator.Task)
	if !ok {
		return
	}
	name, desc := describeTask(splitOp(op))
	simulator.Map.Update(task, []types.PropertyChange{{Name: "info.name", Val: name}, {Name: "info.descriptionId", Val: desc}})
	addRecentTask(entity, ref)
}

// runTask runs fn as the vSphere task op ("<type>.<SOAP method>") on entity and returns
// the task; a fault's message becomes the task error's localized message, as on a real
// vCenter. (Tasks run synchronously in this simulator: the task has ended on return.)
func (l *Lab) runTask(entity types.ManagedObjectReference, op string, fn func() (types.AnyType, *soap.Fault)) types.ManagedObjectReference {
	var msg string
	task := l.newTask(entity, op, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		res, f := fn()
		if f != nil {
			msg = f.String
			return nil, f.Detail.Fault.(types.BaseMethodFault)
		}
		return res, nil
	})
	ref := task.Run()
	if task.Info.Error != nil && msg != "" {
		simulator.Map.Update(task, []types.PropertyChange{{Name: "info.error", Val: types.LocalizedMethodFault{
			Fault: task.Info.Error.Fault, LocalizedMessage: msg,
		}}})
	}
	return ref
}

// startTask creates the task op on entity in state running, for work that ends later
// (finishTask or adoptOutcome ends it).
func (l *Lab) startTask(entity types.ManagedObjectReference, op string) *simulator.Task {
	task := l.newTask(entity, op, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) { return nil, nil })
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.state", Val: types.TaskInfoStateRunning},
		{Name: "info.startTime", Val: time.Now()},
	})
	return task
}

// finishTask ends a running task with outcome (nil: success).
func finishTask(task *simulator.Task, outcome *soap.Fault) {
	now := time.Now()
	defer notifyTaskEnd(task.Self, now)
	changes := []types.PropertyChange{{Name: "info.completeTime", Val: now}}
	if outcome != nil {
		changes = append(changes,
			types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateError},
			types.PropertyChange{Name: "info.error", Val: types.LocalizedMethodFault{
				Fault: outcome.Detail.Fault.(types.BaseMethodFault), LocalizedMessage: outcome.String}})
	} else {
		changes = append(changes, types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateSuccess})
	}
	simulator.Map.Update(task, changes)
}

// adoptOutcome waits until the task inner (which did the work of outer) ends, gives outer
// its outcome, and removes inner: a client sees one task per call, as on vCenter.
func adoptOutcome(outer *simulator.Task, inner types.ManagedObjectReference) {
	t, ok := simulator.Map.Get(inner).(*simulator.Task)
	if !ok {
		finishTask(outer, nil)
		return
	}
	for {
		var state types.TaskInfoState
		simulator.Map.WithLock(t, func() { state = t.Info.State })
		if state == types.TaskInfoStateSuccess || state == types.TaskInfoStateError {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var info types.TaskInfo
	simulator.Map.WithLock(t, func() { info = t.Info })
	now := time.Now()
	defer notifyTaskEnd(outer.Self, now)
	changes := []types.PropertyChange{
		{Name: "info.completeTime", Val: now},
		{Name: "info.state", Val: info.State},
		{Name: "info.result", Val: info.Result},
	}
	if info.Error != nil {
		changes = append(changes, types.PropertyChange{Name: "info.error", Val: *info.Error})
	}
	simulator.Map.Update(outer, changes)
	if info.Entity != nil {
		dropRecentTask(*info.Entity, inner)
	}
	simulator.Map.Remove(inner)
}
