package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Lab holds everything the lab adds to the simulator: what each host's storage stack
// sees, the datastores it mounted, the VMs it registered, and the storage events (APD)
// that tests inspect. One mutex guards it; simulator objects are updated under their
// own locks, always after taking l.mu (never the other way round).
type Lab struct {
	mu  sync.Mutex
	cfg *Config
	fc  *fabricClient

	fabrics    map[string]*Fabric
	arraysDown map[string]string // array name -> why its fabric could not be fetched

	hosts        []*hostState
	hostByName   map[string]*hostState
	hostByRef    map[string]*hostState // HostSystem moref value
	hostBySystem map[string]*hostState // HostStorageSystem / HostDatastoreSystem moref value

	datastores map[string]*dsState // Datastore moref value
	vms        map[string]*vmState // VirtualMachine moref value

	events   []StorageEvent
	eventSeq int64
	eventLog *os.File

	guestRules []guestRule

	dcRef, dsFolderRef, vmFolderRef, clusterRef, poolRef types.ManagedObjectReference
	folders, pools                                       map[string]types.ManagedObjectReference
	ctx                                                  *simulator.Context
	nextID                                               int
}

// StorageEvent is something a careless restore does to a host's storage or to production:
// all paths down on a mounted datastore, a device lost while still attached, a VMFS volume
// destroyed, a production file opened by a VM that does not live on production storage, a
// guest reporting the IP of another running guest on the same network.
type StorageEvent struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// apd | apd_exit | device_lost_while_attached | vmfs_destroyed | production_file_opened |
	// guest_ip_conflict
	Kind      string `json:"kind"`
	Host      string `json:"host,omitempty"`
	VM        string `json:"vm,omitempty"`
	Datastore string `json:"datastore,omitempty"`
	NAA       string `json:"naa,omitempty"`
	Detail    string `json:"detail,omitempty"`
}

func newLab(cfg *Config) (*Lab, error) {
	fc, err := newFabricClient(cfg.CABundle)
	if err != nil {
		return nil, err
	}
	l := &Lab{
		cfg:          cfg,
		fc:           fc,
		fabrics:      map[string]*Fabric{},
		arraysDown:   map[string]string{},
		folders:      map[string]types.ManagedObjectReference{},
		pools:        map[string]types.ManagedObjectReference{},
		hostByName:   map[string]*hostState{},
		hostByRef:    map[string]*hostState{},
		hostBySystem: map[string]*hostState{},
		datastores:   map[string]*dsState{},
		vms:          map[string]*vmState{},
	}
	if cfg.Events != "" {
		l.eventLog, err = os.OpenFile(cfg.Events, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
	}
	l.ctx = &simulator.Context{
		Context: context.Background(),
		Map:     simulator.Map,
		Session: &simulator.Session{
			UserSession: types.UserSession{Key: "lab-internal", UserName: "lab"},
			Registry:    simulator.NewRegistry(),
		},
	}
	return l, nil
}

func (l *Lab) newID(prefix string) string {
	l.nextID++
	return fmt.Sprintf("%s-%d", prefix, 1000+l.nextID)
}

// event records a storage event (l.mu held).
func (l *Lab) event(kind, host, ds, naa, detail string) {
	l.record(StorageEvent{Kind: kind, Host: host, Datastore: ds, NAA: naa, Detail: detail})
}

// record appends e (numbered and dated here) to the events and the events log (l.mu held).
func (l *Lab) record(e StorageEvent) {
	l.eventSeq++
	e.Seq, e.Time = l.eventSeq, time.Now().UTC()
	l.events = append(l.events, e)
	line := fmt.Sprintf("%s host=%s vm=%s datastore=%s naa=%s %s", e.Kind, e.Host, e.VM, e.Datastore, e.NAA, e.Detail)
	log.Printf("storage event: %s", line)
	if l.eventLog != nil {
		fmt.Fprintf(l.eventLog, "%s %s\n", e.Time.Format(time.RFC3339Nano), line)
	}
}

// describeCall names the host and the main argument of a SOAP call, for the call log, and
// for a call on a VM (or a registration on a host), the host that VM runs on (vmHost).
func (l *Lab) describeCall(m *simulator.Method) (host, arg, vmHost string) {
	// hostBySystem and hostByRef are fixed after start-up: no lock needed.
	if h := l.hostBySystem[m.This.Value]; h != nil {
		host = h.Name
	} else if h := l.hostByRef[m.This.Value]; h != nil {
		host = h.Name
	}
	if m.This.Type == "VirtualMachine" {
		if vm, ok := simulator.Map.Get(m.This).(*simulator.VirtualMachine); ok {
			simulator.Map.WithLock(vm, func() {
				if vm.Runtime.Host != nil {
					if h := l.hostByRef[vm.Runtime.Host.Value]; h != nil {
						vmHost = h.Name
					}
				}
			})
		}
	}
	switch req := m.Body.(type) {
	case *types.RescanHba:
		arg = req.HbaDevice
	case *types.AddInternetScsiStaticTargets:
		arg = req.IScsiHbaDevice
	case *types.RemoveInternetScsiStaticTargets:
		arg = req.IScsiHbaDevice
	case *types.UnmountVmfsVolume:
		arg = req.VmfsUuid
	case *types.DetachScsiLun:
		arg = req.LunUuid
	case *types.CreateNasDatastore:
		arg = req.Spec.RemoteHost + ":" + req.Spec.RemotePath
	case *types.RegisterVM_Task:
		arg = req.Path
		if req.Host != nil {
			if h := l.hostByRef[req.Host.Value]; h != nil {
				vmHost = h.Name
			}
		}
	case *types.RenameDatastore:
		arg = req.NewName
	}
	return host, arg, vmHost
}

// taskEntity returns the managed entity a task about object ref should report: the
// object itself when it is an entity, else its host, its datastore or the datacenter
// (clients cannot read a task whose entity is not a ManagedEntity).
func (l *Lab) taskEntity(ref types.ManagedObjectReference) types.ManagedObjectReference {
	switch ref.Type {
	case "VirtualMachine", "HostSystem", "Datastore", "Folder", "Datacenter", "ClusterComputeResource",
		"ComputeResource", "ResourcePool", "VirtualApp", "Network", "DistributedVirtualSwitch",
		"VmwareDistributedVirtualSwitch", "DistributedVirtualPortgroup", "StoragePod":
		return ref
	}
	if h := l.hostBySystem[ref.Value]; h != nil {
		return h.Ref
	}
	if b, ok := simulator.Map.Get(ref).(*simulator.HostDatastoreBrowser); ok && len(b.Datastore) > 0 {
		return b.Datastore[0]
	}
	return l.dcRef
}
