package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// The fabric document each array publishes (lab/fabric.py is the reference).

type IscsiTarget struct {
	Address string `json:"address"`
	Port    int32  `json:"port"`
	IQN     string `json:"iqn"`
}

type LunExport struct {
	Initiator string `json:"initiator"`
	Protocol  string `json:"protocol"`
	Lun       int32  `json:"lun"`
}

type FabricLun struct {
	NAA          string        `json:"naa"`
	Name         string        `json:"name"`
	ContentDir   string        `json:"content_dir"`
	SizeMB       int64         `json:"size_mb"`
	Vendor       string        `json:"vendor"`
	Model        string        `json:"model"`
	Exports      []LunExport   `json:"exports"`
	IscsiTargets []IscsiTarget `json:"iscsi_targets"`
	FcTargets    []string      `json:"fc_targets"`
	ReadOnly     bool          `json:"read_only"`  // a snapshot exported as is: hosts cannot write it
	Production   bool          `json:"production"` // a volume the seed created as production
}

type NfsRule struct {
	Match string `json:"match"`
	RW    bool   `json:"rw"`
	Root  bool   `json:"root"`
}

type NfsExport struct {
	Servers    []string  `json:"servers"`
	Path       string    `json:"path"`
	Name       string    `json:"name"`
	ContentDir string    `json:"content_dir"`
	SizeMB     int64     `json:"size_mb"`
	Rules      []NfsRule `json:"rules"`
	Production bool      `json:"production"` // a volume the seed created as production
}

type Fabric struct {
	Array      string      `json:"array"`
	Vendor     string      `json:"vendor"`
	Generation int64       `json:"generation"`
	Luns       []FabricLun `json:"luns"`
	NfsExports []NfsExport `json:"nfs_exports"`
}

// fabricClient fetches fabrics from the arrays' lab endpoints over TLS, trusting the lab CA.
type fabricClient struct {
	http *http.Client
}

func newFabricClient(caBundle string) (*fabricClient, error) {
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(caBundle)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificates", caBundle)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 4}
	return &fabricClient{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

func (c *fabricClient) fetch(labURL string) (*Fabric, error) {
	resp, err := c.http.Get(strings.TrimRight(labURL, "/") + "/fabric")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s/fabric: HTTP %d", labURL, resp.StatusCode)
	}
	var f Fabric
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		return nil, err
	}
	return &f, nil
}

// normalizeInitiator mirrors lab.fabric.normalize_initiator.
func normalizeInitiator(v string) string {
	v = strings.TrimSpace(v)
	l := strings.ToLower(v)
	if strings.HasPrefix(l, "iqn.") || strings.HasPrefix(l, "eui.") || strings.HasPrefix(l, "naa.") {
		return l
	}
	h := strings.NewReplacer(":", "", "-", "").Replace(l)
	if len(h) == 16 && strings.Trim(h, "0123456789abcdef") == "" {
		return h
	}
	return l
}

// ruleMatches reports whether an NFS client rule admits the address ip.
func ruleMatches(match, ip string) bool {
	match = strings.TrimSpace(match)
	addr := net.ParseIP(ip)
	if addr == nil {
		return false
	}
	if strings.Contains(match, "/") {
		_, cidr, err := net.ParseCIDR(match)
		return err == nil && cidr.Contains(addr)
	}
	if m := net.ParseIP(match); m != nil {
		return m.Equal(addr)
	}
	return false
}

func cleanNfsPath(p string) string {
	p = strings.TrimSpace(p)
	if p == "" {
		return "/"
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
	}
	return p
}
