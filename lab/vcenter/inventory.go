package main

// Building the inventory from the lab topology: one datacenter, one cluster of hosts with
// their own adapters and VMkernel addresses, the production datastores found on the
// arrays, and the production VMs.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

func (l *Lab) build(model *simulator.Model) error {
	ctx := context.Background()
	client, err := vim25.NewClient(ctx, model.Service)
	if err != nil {
		return err
	}
	root := object.NewRootFolder(client)
	dc, err := root.CreateDatacenter(ctx, l.cfg.Datacenter)
	if err != nil {
		return fmt.Errorf("datacenter: %w", err)
	}
	folders, err := dc.Folders(ctx)
	if err != nil {
		return err
	}
	cluster, err := folders.HostFolder.CreateCluster(ctx, l.cfg.Cluster, types.ClusterConfigSpecEx{})
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	l.dcRef = dc.Reference()
	l.dsFolderRef = folders.DatastoreFolder.Reference()
	l.vmFolderRef = folders.VmFolder.Reference()
	l.clusterRef = cluster.Reference()

	for i, hc := range l.cfg.Hosts {
		task, err := cluster.AddHost(ctx, types.HostConnectSpec{HostName: hc.Name, Force: true}, true, nil, nil)
		if err != nil {
			return fmt.Errorf("host %s: %w", hc.Name, err)
		}
		info, err := task.WaitForResult(ctx, nil)
		if err != nil {
			return fmt.Errorf("host %s: %w", hc.Name, err)
		}
		ref := info.Result.(types.ManagedObjectReference)
		l.addHost(ref, hc, i)
	}
	pool, err := cluster.ResourcePool(ctx)
	if err != nil {
		return err
	}
	l.poolRef = pool.Reference()
	for _, name := range l.cfg.Pools {
		child, err := pool.Create(ctx, name, types.DefaultResourceConfigSpec())
		if err != nil {
			return fmt.Errorf("resource pool %s: %w", name, err)
		}
		l.pools[name] = child.Reference()
	}
	for _, name := range l.cfg.VMFolders {
		f, err := folders.VmFolder.CreateFolder(ctx, name)
		if err != nil {
			return fmt.Errorf("VM folder %s: %w", name, err)
		}
		l.folders[name] = f.Reference()
	}
	dcObj := simulator.Map.Get(l.dcRef).(*simulator.Datacenter)
	if simulator.Map.FindByName(l.cfg.Network, dcObj.Network) == nil {
		return fmt.Errorf("network %q not found in the datacenter", l.cfg.Network)
	}
	for _, name := range l.cfg.Isolated {
		if err := l.addPortGroupEverywhere(ctx, client, name); err != nil {
			return fmt.Errorf("port group %s: %w", name, err)
		}
	}
	return nil
}

// addPortGroupEverywhere gives every host a standard port group called name on vSwitch0.
// Port groups of one name on several hosts are one Network in vCenter: the first host's
// network system creates it, the others get the port group and a reference to it.
func (l *Lab) addPortGroupEverywhere(ctx context.Context, client *vim25.Client, name string) error {
	spec := types.HostPortGroupSpec{Name: name, VswitchName: "vSwitch0", Policy: types.HostNetworkPolicy{}}
	dc := simulator.Map.Get(l.dcRef).(*simulator.Datacenter)
	var network types.ManagedObjectReference
	for i, h := range l.hosts {
		hs := simulator.Map.Get(h.Ref).(*simulator.HostSystem)
		nsys := simulator.Map.Get(*hs.ConfigManager.NetworkSystem).(*simulator.HostNetworkSystem)
		if i == 0 {
			if err := object.NewHostNetworkSystem(client, nsys.Self).AddPortGroup(ctx, spec); err != nil {
				return err
			}
			e := simulator.Map.FindByName(name, dc.Network)
			if e == nil {
				return fmt.Errorf("the network was not created in the datacenter")
			}
			network = e.Reference()
		} else {
			info := nsys.NetworkInfo
			info.Vswitch = append([]types.HostVirtualSwitch(nil), info.Vswitch...)
			info.Vswitch[0].Portgroup = append(append([]string(nil), info.Vswitch[0].Portgroup...), name)
			info.Portgroup = append(append([]types.HostPortGroup(nil), info.Portgroup...),
				types.HostPortGroup{Key: "key-vim.host.PortGroup-" + name, Spec: spec})
		}
		if n := hs.Config.Network; n != nil {
			n.Portgroup = append(append([]types.HostPortGroup(nil), n.Portgroup...),
				types.HostPortGroup{Key: "key-vim.host.PortGroup-" + name, Spec: spec})
			if len(n.Vswitch) > 0 {
				n.Vswitch = append([]types.HostVirtualSwitch(nil), n.Vswitch...)
				n.Vswitch[0].Portgroup = append(append([]string(nil), n.Vswitch[0].Portgroup...), "key-vim.host.PortGroup-"+name)
			}
		}
		simulator.Map.AddReference(hs, &hs.Network, network)
		if n, ok := simulator.Map.Get(network).(*mo.Network); ok {
			simulator.Map.AddReference(n, &n.Host, h.Ref)
		}
	}
	cluster := simulator.Map.Get(l.clusterRef).(*simulator.ClusterComputeResource)
	simulator.Map.AddReference(cluster, &cluster.Network, network)
	return nil
}

func (l *Lab) addHost(ref types.ManagedObjectReference, hc HostConfig, index int) {
	hs := simulator.Map.Get(ref).(*simulator.HostSystem)
	if hs.Config != nil && hs.Config.Network != nil && len(hs.Config.Network.Vnic) > 0 {
		vnics := append([]types.HostVirtualNic(nil), hs.Config.Network.Vnic...)
		ip := *vnics[0].Spec.Ip
		ip.IpAddress = hc.VmkIP
		ip.SubnetMask = "255.0.0.0"
		vnics[0].Spec.Ip = &ip
		hs.Config.Network.Vnic = vnics
	}
	keepOnLoopback(hs)
	h := &hostState{
		Name: hc.Name, VmkIP: hc.VmkIP, Ref: ref,
		StorRef: *hs.ConfigManager.StorageSystem, DssRef: *hs.ConfigManager.DatastoreSystem,
		Devices: map[string]*device{}, Unmounted: map[string]bool{},
	}
	h.HBAs = append(h.HBAs, &hba{Device: "vmhba0", Kind: "local", Bus: 0})
	for i, w := range hc.WWPNs {
		wwpn := normalizeInitiator(w)
		wwnn := "20" + wwpn[2:]
		h.HBAs = append(h.HBAs, &hba{Device: fmt.Sprintf("vmhba%d", 2+i), Kind: "fc", WWPN: wwpn, WWNN: wwnn, Bus: int32(59 + 36*i)})
	}
	sw := &hba{Device: "vmhba64", Kind: "iscsi", IQN: normalizeInitiator(hc.IQN), Bus: 0}
	for _, t := range hc.StaticTargets {
		sw.Static = append(sw.Static, target{Address: t.Address, Port: port(t.Port), IQN: t.IQN, Method: "staticMethod"})
	}
	h.HBAs = append(h.HBAs, sw)
	l.hosts = append(l.hosts, h)
	l.hostByName[h.Name] = h
	l.hostByRef[ref.Value] = h
	l.hostBySystem[h.StorRef.Value] = h
	l.hostBySystem[h.DssRef.Value] = h
}

// boot does what hosts do when they start: scan every adapter, mount the VMFS volumes
// they find, mount the configured NFS datastores, then register and start the VMs.
func (l *Lab) boot() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.refreshFabrics(true); err != nil {
		return err
	}
	for _, h := range l.hosts {
		for _, a := range h.HBAs {
			l.rescanAdapter(h, a)
		}
	}
	for _, m := range l.cfg.NfsMounts {
		for _, hn := range m.Hosts {
			h := l.hostByName[hn]
			if h == nil {
				return fmt.Errorf("NFS mount %s: unknown host %s", m.Datastore, hn)
			}
			if _, f := l.mountNfs(h, m.Datastore, "NFS", m.Server, m.Path); f != nil {
				return fmt.Errorf("NFS mount %s on %s: %s", m.Datastore, hn, f.String)
			}
		}
	}
	for _, h := range l.hosts {
		l.publishHost(h)
	}
	for _, s := range l.cfg.VMs {
		h := l.hostByName[s.Host]
		if h == nil {
			return fmt.Errorf("VM %s: unknown host %s", s.Vmx, s.Host)
		}
		pool, folder := l.poolRef, l.vmFolderRef
		if s.Pool != "" {
			if pool = l.pools[s.Pool]; pool.Value == "" {
				return fmt.Errorf("VM %s: unknown resource pool %s", s.Vmx, s.Pool)
			}
		}
		if s.Folder != "" {
			if folder = l.folders[s.Folder]; folder.Value == "" {
				return fmt.Errorf("VM %s: unknown VM folder %s", s.Vmx, s.Folder)
			}
		}
		res, f := l.registerVM(folder, &types.RegisterVM_Task{
			Path: fmt.Sprintf("[%s] %s", s.Datastore, s.Vmx), Pool: &pool, Host: &h.Ref,
		})
		if f != nil {
			return fmt.Errorf("register %s on %s: %s", s.Vmx, s.Datastore, f.String)
		}
		if !s.PowerOn {
			continue
		}
		v := l.vms[res.(types.ManagedObjectReference).Value]
		ds := l.datastores[v.Datastore]
		vmx, err := readVmx(filepath.Join(ds.ContentDir, v.RelPath))
		if err != nil {
			return err
		}
		want := uuidLocation(ds.volumeID(), v.RelPath)
		if have := vmx.get("uuid.location"); have != "" && have != want {
			return fmt.Errorf("production VM %s would ask 'moved or copied': its uuid.location %q does not match %q",
				s.Vmx, have, want)
		}
		if f := l.powerOn(v, v.obj()); f != nil {
			return fmt.Errorf("power on %s: %s", s.Vmx, f.String)
		}
	}
	return nil
}

func hostList(l *Lab) string {
	names := make([]string, 0, len(l.hosts))
	for _, h := range l.hosts {
		names = append(names, h.Name)
	}
	return strings.Join(names, ", ")
}

// loopbackDNS stands in for the simulator template's public DNS server.
const loopbackDNS = "127.0.0.53"

// keepOnLoopback replaces the non-loopback addresses of the simulator's ESXi template (a
// public DNS server, a 192.168 management candidate) in the host's config: every address
// the lab shows, even one that is only data, is in 127.0.0.0/8. The template's structures
// are shared by all hosts, so they are copied before they change.
func keepOnLoopback(hs *simulator.HostSystem) {
	cfg := hs.Config
	if cfg == nil {
		return
	}
	if n := cfg.Network; n != nil {
		net := *n
		net.DnsConfig = loopbackDNSConfig(n.DnsConfig)
		net.NetStackInstance = append([]types.HostNetStackInstance(nil), n.NetStackInstance...)
		for i := range net.NetStackInstance {
			net.NetStackInstance[i].DnsConfig = loopbackDNSConfig(net.NetStackInstance[i].DnsConfig)
		}
		cfg.Network = &net
	}
	if m := cfg.VirtualNicManagerInfo; m != nil {
		info := &types.HostVirtualNicManagerInfo{}
		for _, nc := range m.NetConfig {
			nc.CandidateVnic = append([]types.HostVirtualNic(nil), nc.CandidateVnic...)
			for i := range nc.CandidateVnic {
				if ip := nc.CandidateVnic[i].Spec.Ip; ip != nil && !strings.HasPrefix(ip.IpAddress, "127.") {
					c := *ip
					c.IpAddress = "127.0.0.1"
					nc.CandidateVnic[i].Spec.Ip = &c
				}
			}
			info.NetConfig = append(info.NetConfig, nc)
		}
		cfg.VirtualNicManagerInfo = info
	}
}

func loopbackDNSConfig(b types.BaseHostDnsConfig) types.BaseHostDnsConfig {
	d, ok := b.(*types.HostDnsConfig)
	if !ok || d == nil || len(d.Address) == 0 {
		return b
	}
	c := *d
	c.Address = []string{loopbackDNS}
	return &c
}
