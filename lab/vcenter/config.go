package main

import (
	"encoding/json"
	"fmt"
	"os"
)

// Config is written by `python -m lab up` (see vcenter_config in lab/control.py) and read at start.
type Config struct {
	Listen     string        `json:"listen"` // host:port
	User       string        `json:"user"`
	Password   string        `json:"password"`
	Cert       string        `json:"cert"`
	Key        string        `json:"key"`
	CABundle   string        `json:"ca_bundle"`
	Datacenter string        `json:"datacenter"`
	Cluster    string        `json:"cluster"`
	Network    string        `json:"network"`
	Isolated   []string      `json:"isolated_networks"` // port groups on every host, reaching nothing
	VMFolders  []string      `json:"vm_folders"`        // child folders of the datacenter's VM folder
	Pools      []string      `json:"resource_pools"`    // child pools of the cluster's root pool
	Hosts      []HostConfig  `json:"hosts"`
	Arrays     []ArrayRef    `json:"arrays"`
	NfsMounts  []NfsMount    `json:"nfs_mounts"`
	VMs        []SeedVM      `json:"vms"`
	Guest      GuestDefaults `json:"guest"`
	Events     string        `json:"events_log"` // optional file that storage events are appended to
}

// HostConfig describes one ESXi host of the cluster.
type HostConfig struct {
	Name          string         `json:"name"`
	VmkIP         string         `json:"vmk_ip"`
	IQN           string         `json:"iqn"`
	WWPNs         []string       `json:"wwpns"`
	StaticTargets []TargetConfig `json:"static_targets"`
}

// TargetConfig is an iSCSI static target configured on a host at start.
type TargetConfig struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
	IQN     string `json:"iqn"`
}

// ArrayRef tells the vCenter where an array publishes its fabric.
type ArrayRef struct {
	Name   string `json:"name"`
	LabURL string `json:"lab_url"` // e.g. https://127.0.0.1:8443/lab
}

// NfsMount is a production NFS datastore mounted on some hosts at start.
type NfsMount struct {
	Datastore string   `json:"datastore"`
	Server    string   `json:"server"`
	Path      string   `json:"path"`
	Hosts     []string `json:"hosts"`
}

// SeedVM is a production VM registered (and maybe powered on) at start.
type SeedVM struct {
	Datastore string `json:"datastore"`
	Vmx       string `json:"vmx"` // path inside the datastore, e.g. "app-01/app-01.vmx"
	Host      string `json:"host"`
	Folder    string `json:"folder"` // a name in Config.VMFolders ("" = the datacenter's VM folder)
	Pool      string `json:"pool"`   // a name in Config.Pools ("" = the cluster's root pool)
	PowerOn   bool   `json:"power_on"`
}

// GuestDefaults sets how simulated guests behave after power-on.
type GuestDefaults struct {
	ToolsDelayS float64 `json:"tools_delay_s"`
}

func loadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Datacenter == "" || c.Cluster == "" || len(c.Hosts) == 0 {
		return nil, fmt.Errorf("%s: datacenter, cluster and hosts are required", path)
	}
	if c.Network == "" {
		c.Network = "VM Network"
	}
	return &c, nil
}
