package main

// What the speed benchmark and the load and fault tests need from the vCenter: the call
// log's start and end of every call (for _Task methods, the end of the task it started),
// latency rules that slow every call of some methods until they are removed, and the end of
// every SOAP session on demand (lab/README.md).

import (
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// ---- the call log's times ---------------------------------------------------------------------

// logWriter passes a SOAP reply through and keeps its status and, for _Task methods, its
// body (to learn which task the call returned).
type logWriter struct {
	http.ResponseWriter
	capture bool
	status  int
	body    []byte
}

const maxCapturedReply = 64 << 10

func (w *logWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *logWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.capture && len(w.body) < maxCapturedReply {
		w.body = append(w.body, b...)
	}
	return w.ResponseWriter.Write(b)
}

var replyTask = regexp.MustCompile(`<returnval[^>]*\btype="Task"[^>]*>([^<]+)</returnval>`)

// finish records when the reply of call seq was written; for a _Task method that returned a
// task, the call ends when that task does (at once if it has already ended).
func (s *soapLayer) finish(seq int64, w *logWriter) {
	now := time.Now()
	task := ""
	if w.capture && (w.status == 0 || w.status == http.StatusOK) {
		if m := replyTask.FindSubmatch(w.body); m != nil {
			task = string(m[1])
		}
	}
	s.mu.Lock()
	e := s.entry(seq)
	if e != nil {
		e.ReplyEnd = epoch(now)
		if task == "" {
			e.End = e.ReplyEnd
		} else {
			e.Task = task
			s.watch[task] = append(s.watch[task], seq)
		}
	}
	s.mu.Unlock()
	if e == nil || task == "" {
		return
	}
	ref := types.ManagedObjectReference{Type: "Task", Value: task}
	t, ok := simulator.Map.Get(ref).(*simulator.Task)
	if !ok { // not a task the simulator knows (any more): the call ended with its reply
		s.taskEnded(ref, now)
		return
	}
	var state types.TaskInfoState
	var completed *time.Time
	simulator.Map.WithLock(t, func() { state, completed = t.Info.State, t.Info.CompleteTime })
	if state == types.TaskInfoStateSuccess || state == types.TaskInfoStateError {
		at := now
		if completed != nil {
			at = *completed
		}
		s.taskEnded(ref, at)
	}
	// otherwise finishTask or adoptOutcome calls taskEnded when the task ends
}

// taskEndHook is told when a task the lab runs in the background ends (finishTask,
// adoptOutcome): the calls that returned it end then.
var taskEndHook func(ref types.ManagedObjectReference, at time.Time)

func notifyTaskEnd(ref types.ManagedObjectReference, at time.Time) {
	if taskEndHook != nil {
		taskEndHook(ref, at)
	}
}

// taskEnded ends the calls waiting for task ref, which ended at at: their end is the task's
// end, or their reply if the task had ended before it was written.
func (s *soapLayer) taskEnded(ref types.ManagedObjectReference, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seq := range s.watch[ref.Value] {
		e := s.entry(seq)
		if e == nil || e.End != nil || e.ReplyEnd == nil {
			continue
		}
		if end := epoch(at); *end > *e.ReplyEnd {
			e.End, e.TaskEnd = end, end
		} else {
			e.End = e.ReplyEnd
		}
	}
	delete(s.watch, ref.Value)
}

// ---- latency rules ---------------------------------------------------------------------------

type latencyRule struct {
	Operation string   `json:"operation"`
	DelayS    *float64 `json:"delay_s"`
}

func (s *soapLayer) latencyOf(method string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Duration(s.latency[method] * float64(time.Second))
}

// latencyRules returns the rules in force, sorted by method (s.mu held).
func (s *soapLayer) latencyRules() []map[string]interface{} {
	out := []map[string]interface{}{}
	for _, op := range sortedKeys(s.latency) {
		out = append(out, map[string]interface{}{"operation": op, "delay_s": s.latency[op]})
	}
	return out
}

// serveLatency is GET|POST|DELETE /lab/latency.
func (s *soapLayer) serveLatency(w http.ResponseWriter, r *http.Request) {
	status := http.StatusOK
	switch r.Method {
	case http.MethodGet:
	case http.MethodDelete:
		s.mu.Lock()
		s.latency = map[string]float64{}
		s.mu.Unlock()
	case http.MethodPost:
		var req struct {
			Rules *[]latencyRule `json:"rules"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Rules == nil {
			badRequest(w, `expected {"rules": [{"operation": METHOD, "delay_s": SECONDS}, ...]}`)
			return
		}
		seen := map[string]bool{}
		for _, rule := range *req.Rules { // refuse the whole request before applying any of it
			if !isMethod(rule.Operation) {
				badRequest(w, "unknown vSphere method "+strconv.Quote(rule.Operation)+
					" (give a method name such as RescanHba or PowerOnVM_Task)")
				return
			}
			if rule.DelayS == nil || *rule.DelayS < 0 {
				badRequest(w, "delay_s must be given, in seconds, not negative (0 removes the method's latency)")
				return
			}
			if seen[rule.Operation] {
				badRequest(w, "each operation may appear once per request")
				return
			}
			seen[rule.Operation] = true
		}
		s.mu.Lock()
		for _, rule := range *req.Rules {
			if *rule.DelayS > 0 {
				s.latency[rule.Operation] = *rule.DelayS
			} else {
				delete(s.latency, rule.Operation)
			}
		}
		s.mu.Unlock()
		status = http.StatusCreated
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	writeJSON(w, status, map[string]interface{}{"rules": s.latencyRules()})
}

// ---- session expiry ----------------------------------------------------------------------------

// sessionFree lists the methods a client calls without a session (to log in).
var sessionFree = map[string]bool{
	"RetrieveServiceContent": true, "Login": true, "LoginByToken": true,
	"LoginExtensionByCertificate": true, "CloneSession": true,
}

// sessionExpired reports whether the request carries the cookie of a session that
// /lab/sessions/expire ended, for a method that needs a session. The simulator lets
// property reads through without a session; vCenter answers a timed-out session's
// reads with NotAuthenticated like any other call. Reading the ServiceInstance's content and
// the SessionManager (clients read currentSession to find out whether they are still logged
// in, and log in again through si.content.sessionManager) stays possible.
func (s *soapLayer) sessionExpired(r *http.Request, m *simulator.Method) bool {
	if sessionFree[m.Name] || m.Name == "Fetch" && (m.This.Type == "SessionManager" || m.This.Type == "ServiceInstance") {
		return false
	}
	c, err := r.Cookie(soap.SessionCookieName)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired[c.Value]
}

// expireSessions ends every SOAP session, as vCenter's session timeout does; it returns
// how many there were.
func (s *soapLayer) expireSessions() int {
	l := s.lab
	content := simulator.Map.Get(vimServiceInstance).(*simulator.ServiceInstance).Content
	view, ok := l.ctx.Session.Get(*content.SessionManager).(*simulator.SessionManager)
	if !ok {
		return 0
	}
	keys := []string{}
	for _, us := range view.SessionList {
		keys = append(keys, us.Key)
	}
	sort.Strings(keys)
	sm := simulator.Map.SessionManager()
	ended := 0
	for _, key := range keys {
		if key == l.ctx.Session.Key {
			continue
		}
		if res := sm.TerminateSession(l.ctx, &types.TerminateSession{SessionId: []string{key}}); res.Fault() == nil {
			ended++
		}
		s.mu.Lock()
		s.expired[key] = true
		s.mu.Unlock()
	}
	logf("lab: ended %d SOAP session(s) (/lab/sessions/expire)", ended)
	return ended
}

// serveExpireSessions is POST /lab/sessions/expire.
func (s *soapLayer) serveExpireSessions(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if body := strings.TrimSpace(readAll(r)); body != "" && body != "{}" {
		badRequest(w, "the vCenter's /lab/sessions/expire takes no parameters")
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"expired": s.expireSessions()})
}

func readAll(r *http.Request) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}
