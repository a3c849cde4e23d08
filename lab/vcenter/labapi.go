package main

// The lab-only HTTP endpoints (documented in lab/README.md).

import (
	"encoding/json"
	"io"
	"net/http"
	"path"
	"reflect"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	_ = enc.Encode(v)
}

func badRequest(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": msg})
}

func (s *soapLayer) labMux() *http.ServeMux {
	l := s.lab
	mux := http.NewServeMux()
	mux.HandleFunc("/lab/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]bool{"ok": true})
	})
	mux.HandleFunc("/lab/calls", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if r.Method == http.MethodDelete {
			s.counts = map[string]int64{}
			s.log = nil
		}
		writeJSON(w, 200, s.counts)
	})
	mux.HandleFunc("/lab/calls/log", func(w http.ResponseWriter, r *http.Request) {
		since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
		method := r.URL.Query().Get("method")
		s.mu.Lock()
		defer s.mu.Unlock()
		out := []callEntry{}
		for _, e := range s.log {
			if e.Seq > since && (method == "" || e.Method == method) {
				out = append(out, e)
			}
		}
		writeJSON(w, 200, map[string]interface{}{"last_seq": s.seq, "calls": out})
	})
	mux.HandleFunc("/lab/faults", func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet:
		case http.MethodDelete:
			s.mu.Lock()
			s.rules = nil
			s.mu.Unlock()
		case http.MethodPost:
			var rule faultRule
			if err := json.NewDecoder(r.Body).Decode(&rule); err != nil {
				badRequest(w, "invalid JSON: "+err.Error())
				return
			}
			if !isMethod(rule.Operation) {
				badRequest(w, "unknown vSphere method "+strconv.Quote(rule.Operation)+
					" (give a method name such as RescanHba or PowerOnVM_Task)")
				return
			}
			if rule.Error != "" {
				if _, err := newFault(rule.Error); err != nil {
					badRequest(w, err.Error())
					return
				}
			}
			if rule.After < 0 {
				badRequest(w, "after must not be negative")
				return
			}
			if rule.Times != nil && *rule.Times < 1 {
				badRequest(w, "times must be at least 1")
				return
			}
			if rule.DelayS < 0 || rule.DurationS < 0 || (rule.Error == "" && rule.DelayS == 0 && rule.DurationS == 0) {
				badRequest(w, "give an error, a positive delay_s, a positive duration_s, or a combination")
				return
			}
			if rule.DurationS > 0 && !strings.HasSuffix(rule.Operation, "_Task") {
				badRequest(w, "duration_s is for _Task methods (the task runs that long)")
				return
			}
			s.mu.Lock()
			s.rules = append(s.rules, &rule)
			s.mu.Unlock()
		default:
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		out := []faultRule{}
		for _, r := range s.rules {
			out = append(out, *r)
		}
		writeJSON(w, 200, map[string]interface{}{"faults": out})
	})
	mux.HandleFunc("/lab/latency", s.serveLatency)
	mux.HandleFunc("/lab/sessions/expire", s.serveExpireSessions)
	mux.HandleFunc("/lab/fabric-changed", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var f Fabric
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &f); err != nil || f.Array == "" {
			badRequest(w, "expected a fabric document")
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if cur := l.fabrics[f.Array]; cur == nil || f.Generation >= cur.Generation {
			if _, down := l.arraysDown[f.Array]; down {
				logf("array %s is back (fabric generation %d pushed)", f.Array, f.Generation)
				delete(l.arraysDown, f.Array)
			}
			l.fabrics[f.Array] = &f
			l.checkPaths()
		}
		writeJSON(w, 200, map[string]int64{"generation": f.Generation})
	})
	mux.HandleFunc("/lab/array-down", func(w http.ResponseWriter, r *http.Request) {
		// lab control tells of an array it stopped, as ESXi's path probing would notice
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		var req struct {
			Array string `json:"array"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Array == "" {
			badRequest(w, `expected {"array": NAME}`)
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, known := l.fabrics[req.Array]; !known {
			badRequest(w, "unknown array "+strconv.Quote(req.Array))
			return
		}
		l.markArrayDown(req.Array, "stopped by lab control")
		l.checkPaths()
		writeJSON(w, 200, map[string]string{"down": req.Array})
	})
	mux.HandleFunc("/lab/events", func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		defer l.mu.Unlock()
		writeJSON(w, 200, map[string]interface{}{"events": append([]StorageEvent{}, l.events...)})
	})
	mux.HandleFunc("/lab/guest", func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		defer l.mu.Unlock()
		switch r.Method {
		case http.MethodDelete:
			l.guestRules = nil
		case http.MethodPost:
			var rule guestRule
			if err := json.NewDecoder(r.Body).Decode(&rule); err != nil {
				badRequest(w, "invalid JSON: "+err.Error())
				return
			}
			if _, err := path.Match(rule.Match, ""); err != nil || rule.Match == "" {
				badRequest(w, "match must be a glob of VM names")
				return
			}
			if rule.Tools == "" {
				rule.Tools = "normal"
			}
			if rule.Tools != "normal" && rule.Tools != "never" {
				badRequest(w, `tools must be "normal" or "never"`)
				return
			}
			l.guestRules = append(l.guestRules, rule)
		}
		writeJSON(w, 200, map[string]interface{}{"rules": append([]guestRule{}, l.guestRules...)})
	})
	mux.HandleFunc("/lab/state", func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		defer l.mu.Unlock()
		writeJSON(w, 200, l.state())
	})
	return mux
}

type adapterState struct {
	Device string           `json:"device"`
	Kind   string           `json:"kind"`
	IQN    string           `json:"iqn,omitempty"`
	WWPN   string           `json:"wwpn,omitempty"`
	Static []target         `json:"static_targets"`
	Send   []sendTarget     `json:"send_targets"`
	Paths  map[string]int32 `json:"paths"`
}

func (l *Lab) state() map[string]interface{} {
	hosts := []map[string]interface{}{}
	for _, h := range l.hosts {
		adapters := []adapterState{}
		for _, a := range h.HBAs {
			paths := map[string]int32{}
			for naa, p := range a.Paths {
				paths[naa] = p.Lun
			}
			adapters = append(adapters, adapterState{a.Device, a.Kind, a.IQN, a.WWPN,
				append([]target{}, a.Static...), append([]sendTarget{}, a.Send...), paths})
		}
		devices := []device{}
		for _, naa := range sortedKeys(h.Devices) {
			devices = append(devices, *h.Devices[naa])
		}
		hosts = append(hosts, map[string]interface{}{
			"name": h.Name, "moref": h.Ref.Value, "vmk_ip": h.VmkIP, "adapters": adapters,
			"devices": devices, "unmounted_vmfs": sortedKeys(h.Unmounted),
		})
	}
	datastores := []map[string]interface{}{}
	for _, ds := range l.sortedDatastores() {
		vms := []string{}
		for _, v := range l.vmsOnDatastore(ds, nil) {
			vms = append(vms, v.name())
		}
		datastores = append(datastores, map[string]interface{}{
			"name": ds.Name, "moref": ds.Ref.Value, "kind": ds.Kind, "vmfs_uuid": ds.VmfsUUID,
			"label": ds.Label, "naa": ds.NAA, "server": ds.Server, "path": ds.Path,
			"content_dir": ds.ContentDir, "mounts": ds.Mounts, "vms": vms, "production": l.isProduction(ds),
		})
	}
	vms := []map[string]interface{}{}
	for _, ref := range sortedKeys(l.vms) {
		v := l.vms[ref]
		vm := v.obj()
		if vm == nil {
			continue
		}
		var disks []map[string]string
		for _, d := range vm.Config.Hardware.Device {
			disk, ok := d.(*types.VirtualDisk)
			if !ok {
				continue
			}
			entry := map[string]string{}
			if fb, ok := disk.Backing.(types.BaseVirtualDeviceFileBackingInfo); ok {
				info := fb.GetVirtualDeviceFileBackingInfo()
				entry["file"] = info.FileName
				if info.Datastore != nil {
					if ds := l.datastores[info.Datastore.Value]; ds != nil {
						entry["datastore"] = ds.Name
					}
				}
			}
			if naa := rdmDevice(disk.Backing); naa != "" {
				entry["rdm"] = naa
			}
			disks = append(disks, entry)
		}
		folder := ""
		if vm.Parent != nil {
			if f, ok := simulator.Map.Get(*vm.Parent).(*simulator.Folder); ok {
				folder = f.Name
			}
		}
		pool := ""
		if vm.ResourcePool != nil {
			if rp, ok := simulator.Map.Get(*vm.ResourcePool).(*simulator.ResourcePool); ok {
				pool = rp.Name
			}
		}
		vms = append(vms, map[string]interface{}{
			"name": vm.Name, "moref": ref, "path": v.VmxPath, "host": v.hostName(l),
			"power_state": vm.Runtime.PowerState, "question": vm.Runtime.Question != nil,
			"tools": v.ToolsState, "uuid": vm.Config.Uuid, "folder": folder, "pool": pool,
			"connection_state": vm.Runtime.ConnectionState, "disks": disks,
		})
	}
	gens := map[string]int64{}
	for name, f := range l.fabrics {
		gens[name] = f.Generation
	}
	down := map[string]string{}
	for name, why := range l.arraysDown {
		down[name] = why
	}
	return map[string]interface{}{
		"hosts": hosts, "datastores": datastores, "vms": vms,
		"events": append([]StorageEvent{}, l.events...), "fabric_generations": gens,
		"arrays_down": down,
	}
}

var _ = simulator.Map
var _ types.ManagedObjectReference

// isMethod reports whether name is a vSphere method: its request type has a This field
// (a data object type such as HostDnsConfig does not).
func isMethod(name string) bool {
	t, ok := typeFunc(name)
	if name == "" || !ok {
		return false
	}
	for t.Kind() == reflect.Ptr {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return false
	}
	_, ok = t.FieldByName("This")
	return ok
}
