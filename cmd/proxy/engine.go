package main

import (
	"github.com/mizzen-mesh/mizzen/internal/proxy/agent"
	"github.com/mizzen-mesh/mizzen/internal/proxy/dataplane"
)

// newDataplane builds the data plane the agent drives: connections, TLS,
// filters and telemetry (internal/proxy/dataplane) around the routing
// engine of internal/proxy/router and internal/proxy/upstream
// (dataplane.DefaultEngine); captured connections' original destinations
// are read by internal/proxy/capture (the data plane's default).
func newDataplane(o agent.DataplaneOptions) (agent.Dataplane, error) {
	return dataplane.New(dataplane.Options{
		Node: o.Node, Secrets: o.Secrets, Log: o.Log, Registry: o.Registry,
		BindAddress: o.BindAddress,
		Engine:      dataplane.DefaultEngine{},
	})
}
