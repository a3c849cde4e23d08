package main

// Long-running tasks and what vCenter refuses while one runs, and the datastore file
// service's access rules.
//
// A fault rule with duration_s makes a _Task method return at once a task in state running;
// the call's work (or the rule's error) happens when the duration is over, and the task
// then ends with the work's outcome. While such a task runs on a VM, the VM's other
// operations fail with TaskInProgress, as vCenter refuses them during a migration.

import (
	"bytes"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime/debug"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// busyWith returns the long task running on the VM method is called on, if any. Reading
// the VM and answering its question stay possible.
func (s *soapLayer) busyWith(m *simulator.Method) (types.ManagedObjectReference, bool) {
	if m.This.Type != "VirtualMachine" || m.Name == "Fetch" || m.Name == "AnswerVM" {
		return types.ManagedObjectReference{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	task, ok := s.busy[m.This.Value]
	return task, ok
}

func (s *soapLayer) setBusy(vm string, task *types.ManagedObjectReference) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if task == nil {
		delete(s.busy, vm)
	} else {
		s.busy[vm] = *task
	}
}

// writeBusy answers a call on a VM that runs a long task: TaskInProgress, as a task that
// ends in that error for a _Task method.
func (s *soapLayer) writeBusy(w http.ResponseWriter, m *simulator.Method, running types.ManagedObjectReference) {
	f := fault("Another task is already in progress.", &types.TaskInProgress{Task: running})
	if len(m.Name) > 5 && m.Name[len(m.Name)-5:] == "_Task" {
		ref := s.lab.runTask(m.This, m.This.Type+"."+m.Name, func() (types.AnyType, *soap.Fault) { return nil, f })
		s.writeResult(w, m.Name, ref)
		return
	}
	s.writeFault(w, f)
}

// startLongTask answers a _Task call with a running task whose work happens after d: the
// call itself (or the injected fault kind, if set).
func (s *soapLayer) startLongTask(w http.ResponseWriter, r *http.Request, body []byte, m *simulator.Method,
	kind string, d time.Duration, seq int64) {
	if !s.authenticated(r) {
		s.note(seq, "NotAuthenticated")
		s.writeNotAuthenticated(w, m)
		return
	}
	if running, busy := s.busyWith(m); busy {
		s.note(seq, "TaskInProgress")
		s.writeBusy(w, m, running)
		return
	}
	if kind != "" {
		s.note(seq, kind)
	}
	task := s.lab.startTask(s.lab.taskEntity(m.This), m.This.Type+"."+m.Name)
	isVM := m.This.Type == "VirtualMachine"
	if isVM {
		s.setBusy(m.This.Value, &task.Self)
	}
	header := r.Header.Clone()
	go func() {
		time.Sleep(d)
		inner, f := s.performSafely(m, header, body, kind)
		if isVM {
			s.setBusy(m.This.Value, nil)
		}
		switch {
		case f != nil:
			finishTask(task, f)
		case inner.Value == "":
			finishTask(task, nil)
		default:
			adoptOutcome(task, inner)
		}
	}()
	s.writeResult(w, m.Name, task.Self)
}

var (
	returnvalTask = regexp.MustCompile(`<returnval[^>]*>([^<]+)</returnval>`)
	faultString   = regexp.MustCompile(`<faultstring>([^<]*)</faultstring>`)
	faultType     = regexp.MustCompile(`<detail>\s*<[^>]*xsi:type="([A-Za-z0-9_]+)"`)
)

// performSafely is perform, with a panic of the simulator (which net/http would recover
// for a call served at once) turned into a SystemError of the task instead of ending the
// process.
func (s *soapLayer) performSafely(m *simulator.Method, header http.Header, body []byte, kind string) (ref types.ManagedObjectReference, f *soap.Fault) {
	defer func() {
		if p := recover(); p != nil {
			log.Printf("%s on %s:%s panicked in the simulator: %v\n%s", m.Name, m.This.Type, m.This.Value, p, debug.Stack())
			ref, f = types.ManagedObjectReference{}, fault(fmt.Sprintf("the simulator failed: %v", p), &types.SystemError{Reason: fmt.Sprint(p)})
		}
	}()
	return s.perform(m, header, body, kind)
}

// perform does the work of a delayed _Task call: the lab's override or the simulator's
// method; it returns the task that did it, or the call's fault.
func (s *soapLayer) perform(m *simulator.Method, header http.Header, body []byte, kind string) (types.ManagedObjectReference, *soap.Fault) {
	var none types.ManagedObjectReference
	if kind != "" {
		f, err := newFault(kind)
		if err != nil {
			f = &types.SystemError{Reason: err.Error()}
		}
		return none, fault("lab: injected "+kind, f)
	}
	if fn := s.overrides[m.This.Type+"."+m.Name]; fn != nil {
		val, f := fn(&callCtx{method: m, req: &http.Request{Header: header}})
		if f != nil {
			return none, f
		}
		ref, _ := val.(types.ManagedObjectReference)
		return ref, nil
	}
	req := httptest.NewRequest(http.MethodPost, "/sdk", bytes.NewReader(body))
	req.Header = header.Clone()
	rec := httptest.NewRecorder()
	s.next.ServeHTTP(rec, req)
	out := rec.Body.String()
	if rec.Code == http.StatusOK {
		if v := returnvalTask.FindStringSubmatch(out); v != nil {
			return types.ManagedObjectReference{Type: "Task", Value: v[1]}, nil
		}
		return none, nil
	}
	msg, kindOut := "the call failed", "SystemError"
	if v := faultString.FindStringSubmatch(out); v != nil {
		msg = v[1]
	}
	if v := faultType.FindStringSubmatch(out); v != nil {
		kindOut = v[1]
	}
	f, err := newFault(kindOut)
	if err != nil {
		f = &types.SystemError{Reason: msg}
	}
	return none, fault(msg, f)
}

// serveFolder is vCenter's datastore file service (/folder/<path>?dcPath=&dsName=): only
// for a logged-in session (its vmware_soap_session cookie), and 404 for a datastore that
// no host can reach.
func (s *soapLayer) serveFolder(w http.ResponseWriter, r *http.Request) {
	if !s.authenticated(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		http.Error(w, "401 Unauthorized: log in first (vmware_soap_session cookie)", http.StatusUnauthorized)
		return
	}
	if name := r.URL.Query().Get("dsName"); name != "" {
		l := s.lab
		l.mu.Lock()
		ds := l.datastoreByName(name)
		reachable := ds == nil || ds.accessible() // an unknown name: the simulator answers 404
		l.mu.Unlock()
		if !reachable {
			http.Error(w, "404 Not Found: datastore "+name+" is not accessible", http.StatusNotFound)
			return
		}
	}
	s.next.ServeHTTP(w, r)
}
