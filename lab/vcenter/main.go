// Command vcsim-lab serves the lab's vCenter: govmomi's simulator with the storage
// behaviour of ESXi hosts added (see lab/README.md).
package main

import (
	"crypto/rand"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

var readRandom = rand.Read

func main() {
	configPath := flag.String("config", "", "lab vCenter config (JSON)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if err := run(*configPath); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim-lab:", err)
		os.Exit(1)
	}
}

func run(configPath string) error {
	if configPath == "" {
		return fmt.Errorf("-config is required")
	}
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	lab, err := newLab(cfg)
	if err != nil {
		return err
	}

	model := simulator.VPX()
	model.Datacenter, model.Cluster, model.ClusterHost, model.Host = 0, 0, 0, 0
	model.Datastore, model.Machine, model.Portgroup = 0, 0, 0
	model.Autostart = false
	if err := model.Create(); err != nil {
		return err
	}
	if err := lab.build(model); err != nil {
		return err
	}
	if err := lab.boot(); err != nil {
		return fmt.Errorf("boot: %w", err)
	}

	cert, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
	if err != nil {
		return err
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	model.Service.Listen = &url.URL{Host: cfg.Listen, User: url.UserPassword(cfg.User, cfg.Password)}
	model.Service.ServeMux = http.NewServeMux()
	layer := newSoapLayer(lab, nil)
	model.Service.ServeMux.Handle("/lab/", layer.labMux())
	lab.registerStorageOverrides(layer)
	lab.registerVMOverrides(layer)
	lab.registerFileOverrides(layer)
	lab.registerCustomFieldOverrides(layer)

	server := model.Service.NewServer()
	layer.next = server.Config.Handler
	server.Config.Handler = layer
	log.Printf("vcsim-lab ready: https://%s/sdk (hosts: %s)", cfg.Listen, hostList(lab))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	server.Close()
	return nil
}
