package main

import (
	"errors"

	"github.com/mizzen-mesh/mizzen/internal/proxy/agent"
)

// newDataplane builds the data plane the agent drives.
//
// TODO(proxy): wire internal/proxy/dataplane.New with the engine built
// from internal/proxy/router and internal/proxy/upstream once those are
// committed; until then sidecar and router stop at start-up with this error.
func newDataplane(agent.DataplaneOptions) (agent.Dataplane, error) {
	return nil, errors.New("this build has no data plane engine yet")
}
