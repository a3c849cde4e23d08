package main

// The SOAP layer in front of the simulator: it counts every call, injects faults and
// delays, and serves the methods the simulator lacks (or gets wrong for storage work).
// Everything else is passed through to govmomi's simulator unchanged.

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

var vimTypes = types.TypeFunc()

// typeFunc resolves a (possibly prefixed) vim type name.
func typeFunc(name string) (reflect.Type, bool) {
	if t, ok := vimTypes(name); ok {
		return t, true
	}
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return vimTypes(name[i+1:])
	}
	return nil, false
}

// callCtx is what an override receives.
type callCtx struct {
	method *simulator.Method
	req    *http.Request
}

// override serves one SOAP method; it returns the response's returnval (nil for void) or a fault.
type override func(c *callCtx) (interface{}, *soap.Fault)

// callEntry is one call of the call log. Start, End, ReplyEnd and TaskEnd are seconds since
// the epoch: Start when the request arrived, ReplyEnd when its SOAP reply was written
// (injected delays included), End when the call was over: the reply, or for a _Task method
// whose task was still running at the reply, the task's end (then also TaskEnd). End is nil
// until then.
type callEntry struct {
	Seq      int64     `json:"seq"`
	Time     time.Time `json:"time"`
	Start    float64   `json:"start"`
	End      *float64  `json:"end"`
	ReplyEnd *float64  `json:"reply_end"`
	TaskEnd  *float64  `json:"task_end,omitempty"`
	Task     string    `json:"task,omitempty"`
	Method   string    `json:"method"`
	This     string    `json:"this"`
	Host     string    `json:"host,omitempty"`
	VMHost   string    `json:"vm_host,omitempty"` // the host of the VM a call acts on
	Arg      string    `json:"arg,omitempty"`
	Fault    string    `json:"fault,omitempty"`
}

// epoch returns t as seconds since the epoch.
func epoch(t time.Time) *float64 {
	v := float64(t.UnixNano()) / 1e9
	return &v
}

type faultRule struct {
	Operation string  `json:"operation"`
	Error     string  `json:"error,omitempty"`
	Times     *int    `json:"times,omitempty"`
	DelayS    float64 `json:"delay_s,omitempty"`
	After     int     `json:"after,omitempty"` // let this many calls through first
	// _Task methods: the call returns a running task at once; the work (or the error) comes
	// after this many seconds
	DurationS float64 `json:"duration_s,omitempty"`
}

type soapLayer struct {
	lab       *Lab
	next      http.Handler
	overrides map[string]override

	mu      sync.Mutex
	counts  map[string]int64
	log     []callEntry
	seq     int64
	rules   []*faultRule
	latency map[string]float64                      // method -> seconds every call of it waits
	busy    map[string]types.ManagedObjectReference // VM moref value -> its running long task
	watch   map[string][]int64                      // task moref value -> calls waiting for its end
	expired map[string]bool                         // keys of the sessions /lab/sessions/expire ended
}

const maxCallLog = 20000

func newSoapLayer(lab *Lab, next http.Handler) *soapLayer {
	s := &soapLayer{lab: lab, next: next, overrides: map[string]override{}, counts: map[string]int64{},
		latency: map[string]float64{}, busy: map[string]types.ManagedObjectReference{},
		watch: map[string][]int64{}, expired: map[string]bool{}}
	taskEndHook = s.taskEnded
	return s
}

func (s *soapLayer) handle(objType, method string, fn override) {
	s.overrides[objType+"."+method] = fn
}

func (s *soapLayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/folder/") || r.URL.Path == "/folder" {
		s.serveFolder(w, r)
		return
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/sdk") {
		s.next.ServeHTTP(w, r)
		return
	}
	arrived := time.Now()
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	restore := func() {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	method, err := simulator.UnmarshalBody(typeFunc, body)
	if err != nil {
		restore()
		s.next.ServeHTTP(w, r)
		return
	}
	seq := s.record(method, arrived)
	isTask := strings.HasSuffix(method.Name, "_Task")
	lw := &logWriter{ResponseWriter: w, capture: isTask}
	w = lw
	defer s.finish(seq, lw)
	delay, faultKind, duration := s.take(method.Name)
	if lat := s.latencyOf(method.Name); lat > 0 {
		if isTask { // the task is returned running; its work is done when the latency is over
			duration += lat
		} else {
			delay += lat
		}
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if duration > 0 && isTask {
		s.startLongTask(w, r, body, method, faultKind, duration, seq)
		return
	}
	if faultKind != "" { // injected whether or not the caller is logged in: a rule fires once per use
		s.note(seq, faultKind)
		s.writeInjected(w, method, faultKind)
		return
	}
	if s.sessionExpired(r, method) {
		s.note(seq, "NotAuthenticated")
		s.writeNotAuthenticated(w, method)
		return
	}
	if task, busy := s.busyWith(method); busy {
		if !s.authenticated(r) {
			s.note(seq, "NotAuthenticated")
			s.writeNotAuthenticated(w, method)
			return
		}
		s.note(seq, "TaskInProgress")
		s.writeBusy(w, method, task)
		return
	}
	if fn := s.overrides[method.This.Type+"."+method.Name]; fn != nil {
		if !s.authenticated(r) {
			s.note(seq, "NotAuthenticated")
			s.writeNotAuthenticated(w, method)
			return
		}
		val, fault := fn(&callCtx{method: method, req: r})
		if fault != nil {
			s.note(seq, reflect.TypeOf(fault.Detail.Fault).Elem().Name())
			s.writeFault(w, fault)
			return
		}
		s.writeResult(w, method.Name, val)
		return
	}
	if method.Name == "Fetch" {
		if method.This.Type == "SessionManager" && !s.authenticated(r) {
			// vCenter lets a client read the SessionManager before logging in (its
			// currentSession is unset); pyVmomi's session stub does so before each login
			s.writeResult(w, "Fetch", nil)
			return
		}
		// govmomi 0.24's PropertyCollector.Fetch indexes an empty MissingSet when the
		// property is unset (HostNetworkSystem.dnsConfig, a VM's snapshot...) and panics;
		// vCenter answers an unset property with an empty result, which pyVmomi reads as None.
		defer func() {
			if p := recover(); p != nil {
				if simulator.Map.Get(method.This) == nil {
					s.writeFault(w, simulator.Fault("", &types.ManagedObjectNotFound{Obj: method.This}))
					return
				}
				log.Printf("Fetch %s:%s: %v (answered as an unset property)", method.This.Type, method.This.Value, p)
				s.writeResult(w, "Fetch", nil)
			}
		}()
	}
	restore()
	s.next.ServeHTTP(w, r)
}

// record counts a call that arrived at t and appends it to the call log; it returns the log
// sequence number.
func (s *soapLayer) record(m *simulator.Method, t time.Time) int64 {
	host, arg, vmHost := s.lab.describeCall(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[m.Name]++
	s.seq++
	s.log = append(s.log, callEntry{
		Seq: s.seq, Time: t.UTC(), Start: *epoch(t), Method: m.Name,
		This: m.This.Type + ":" + m.This.Value, Host: host, VMHost: vmHost, Arg: arg,
	})
	if len(s.log) > maxCallLog {
		s.log = s.log[len(s.log)-maxCallLog:]
	}
	return s.seq
}

// entry returns the call log entry seq, or nil once the log dropped it (s.mu held).
func (s *soapLayer) entry(seq int64) *callEntry {
	for i := len(s.log) - 1; i >= 0; i-- {
		if s.log[i].Seq == seq {
			return &s.log[i]
		} else if s.log[i].Seq < seq {
			break
		}
	}
	return nil
}

func (s *soapLayer) note(seq int64, fault string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entry(seq); e != nil {
		e.Fault = fault
	}
}

func (s *soapLayer) writeNotAuthenticated(w http.ResponseWriter, m *simulator.Method) {
	s.writeFault(w, simulator.Fault("", &types.NotAuthenticated{
		NoPermission: types.NoPermission{Object: m.This, PrivilegeId: "System.View"},
	}))
}

// take consumes one use of the first fault rule for method: (delay, fault type name, how
// long a task it makes runs).
func (s *soapLayer) take(method string) (time.Duration, string, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.rules {
		if r.Operation != method {
			continue
		}
		if r.After > 0 { // this call counts towards the rule's wait; a later rule may fire
			r.After--
			continue
		}
		if r.Times != nil {
			*r.Times--
			if *r.Times <= 0 {
				s.rules = append(s.rules[:i], s.rules[i+1:]...)
			}
		}
		return time.Duration(r.DelayS * float64(time.Second)), r.Error, time.Duration(r.DurationS * float64(time.Second))
	}
	return 0, "", 0
}

// authenticated asks the simulator whether the request's session cookie is logged in.
func (s *soapLayer) authenticated(r *http.Request) bool {
	const probe = `<?xml version="1.0" encoding="UTF-8"?>` +
		`<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>` +
		`<RetrieveInternalContent xmlns="urn:vim25"><_this type="ServiceInstance">ServiceInstance</_this>` +
		`</RetrieveInternalContent></soapenv:Body></soapenv:Envelope>`
	req := httptest.NewRequest(http.MethodPost, "/sdk", strings.NewReader(probe))
	for _, c := range r.Cookies() {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	s.next.ServeHTTP(rec, req)
	return rec.Code == http.StatusOK
}

// newFault builds an instance of the vim fault type named kind.
func newFault(kind string) (types.BaseMethodFault, error) {
	t, ok := typeFunc(kind)
	if !ok {
		return nil, fmt.Errorf("unknown vSphere fault type %q", kind)
	}
	v, ok := reflect.New(t).Interface().(types.BaseMethodFault)
	if !ok {
		return nil, fmt.Errorf("%q is not a vSphere fault type", kind)
	}
	return v, nil
}

// fillRefs sets the unset object references of an injected fault (DuplicateName's object,
// say) to the object the method was called on: an empty reference is no valid SOAP, and a
// client cannot read the fault at all.
func fillRefs(v reflect.Value, this types.ManagedObjectReference) {
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return
	}
	refType := reflect.TypeOf(types.ManagedObjectReference{})
	for i := 0; i < v.NumField(); i++ {
		field := v.Field(i)
		if !field.CanSet() {
			continue
		}
		switch {
		case field.Type() == refType:
			if field.Interface().(types.ManagedObjectReference).Type == "" {
				field.Set(reflect.ValueOf(this))
			}
		case field.Kind() == reflect.Struct && v.Type().Field(i).Anonymous:
			fillRefs(field.Addr(), this)
		}
	}
}

func (s *soapLayer) writeInjected(w http.ResponseWriter, m *simulator.Method, kind string) {
	f, err := newFault(kind)
	if err != nil { // validated when the rule was added
		f = &types.SystemError{Reason: err.Error()}
	}
	fillRefs(reflect.ValueOf(f), m.This)
	msg := "lab: injected " + kind
	if strings.HasSuffix(m.Name, "_Task") {
		entity := s.lab.taskEntity(m.This)
		ref := s.lab.runTask(entity, m.This.Type+"."+m.Name,
			func() (types.AnyType, *soap.Fault) { return nil, simulator.Fault(msg, f) })
		s.writeResult(w, m.Name, ref)
		return
	}
	s.writeFault(w, simulator.Fault(msg, f))
}

// ---- encoding -------------------------------------------------------------------------------

type envelope struct {
	XMLName xml.Name    `xml:"soapenv:Envelope"`
	Enc     string      `xml:"xmlns:soapenc,attr"`
	Env     string      `xml:"xmlns:soapenv,attr"`
	XSD     string      `xml:"xmlns:xsd,attr"`
	XSI     string      `xml:"xmlns:xsi,attr"`
	Body    interface{} `xml:"soapenv:Body"`
}

type resultBody struct {
	name string
	val  interface{}
}

func (b resultBody) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	el := xml.StartElement{Name: xml.Name{Space: "urn:vim25", Local: b.name}}
	if err := e.EncodeElement(b.val, el); err != nil {
		return err
	}
	return e.EncodeToken(start.End())
}

type faultBody struct {
	fault *soap.Fault
}

func (b faultBody) MarshalXML(e *xml.Encoder, start xml.StartElement) error {
	if err := e.EncodeToken(start); err != nil {
		return err
	}
	f := xml.StartElement{Name: xml.Name{Local: "soapenv:Fault"}}
	if err := e.EncodeToken(f); err != nil {
		return err
	}
	code := b.fault.Code
	if code == "" {
		code = "ServerFaultCode"
	}
	if err := e.EncodeElement(code, xml.StartElement{Name: xml.Name{Local: "faultcode"}}); err != nil {
		return err
	}
	if err := e.EncodeElement(b.fault.String, xml.StartElement{Name: xml.Name{Local: "faultstring"}}); err != nil {
		return err
	}
	detail := xml.StartElement{Name: xml.Name{Local: "detail"}}
	if err := e.EncodeToken(detail); err != nil {
		return err
	}
	kind := reflect.TypeOf(b.fault.Detail.Fault).Elem().Name()
	inner := xml.StartElement{
		Name: xml.Name{Local: kind + "Fault"},
		Attr: []xml.Attr{
			{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"},
			{Name: xml.Name{Local: "xsi:type"}, Value: kind},
		},
	}
	if err := e.EncodeElement(b.fault.Detail.Fault, inner); err != nil {
		return err
	}
	if err := e.EncodeToken(detail.End()); err != nil {
		return err
	}
	if err := e.EncodeToken(f.End()); err != nil {
		return err
	}
	return e.EncodeToken(start.End())
}

func writeEnvelope(w http.ResponseWriter, status int, body interface{}) {
	var out bytes.Buffer
	out.WriteString(xml.Header)
	enc := xml.NewEncoder(&out)
	err := enc.Encode(&envelope{
		Enc:  "http://schemas.xmlsoap.org/soap/encoding/",
		Env:  "http://schemas.xmlsoap.org/soap/envelope/",
		XSD:  "http://www.w3.org/2001/XMLSchema",
		XSI:  "http://www.w3.org/2001/XMLSchema-instance",
		Body: body,
	})
	if err == nil {
		err = enc.Flush()
	}
	if err != nil {
		log.Printf("encoding response: %v", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(out.Bytes())
}

// genericResponse is any method's response: the simulator's types registry has no
// *Response types, so the element name comes from the method and returnval is encoded as is.
type genericResponse struct {
	Returnval interface{} `xml:"returnval,omitempty"`
}

func (s *soapLayer) writeResult(w http.ResponseWriter, method string, val interface{}) {
	writeEnvelope(w, http.StatusOK, resultBody{name: method + "Response", val: genericResponse{Returnval: val}})
}

func (s *soapLayer) writeFault(w http.ResponseWriter, f *soap.Fault) {
	writeEnvelope(w, http.StatusInternalServerError, faultBody{fault: f})
}
