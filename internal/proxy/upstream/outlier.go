package upstream

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// outlierConfig is the consecutive-errors part of Envoy's outlier
// detection.
type outlierConfig struct {
	consec5xx       uint32
	consecGateway   uint32
	enforce5xx      uint32 // percent
	enforceGateway  uint32 // percent
	interval        time.Duration
	baseEjection    time.Duration
	maxEjection     time.Duration
	maxEjectPercent uint32
}

func parseOutlier(od *clusterv3.OutlierDetection) (*outlierConfig, error) {
	if od == nil {
		return nil, nil
	}
	if od.GetSplitExternalLocalOriginErrors() {
		return nil, fmt.Errorf("outlier_detection.split_external_local_origin_errors is not supported")
	}
	if len(od.GetMonitors()) > 0 {
		return nil, fmt.Errorf("outlier_detection.monitors are not supported")
	}
	pct := func(v interface{ GetValue() uint32 }, present bool, def uint32) uint32 {
		if present {
			return v.GetValue()
		}
		return def
	}
	// Success-rate and failure-percentage ejection are off unless enforced;
	// reject configurations that enforce them.
	if od.GetEnforcingSuccessRate() != nil && od.GetEnforcingSuccessRate().GetValue() > 0 {
		return nil, fmt.Errorf("outlier_detection: success rate ejection is not supported")
	}
	if od.GetEnforcingFailurePercentage().GetValue() > 0 || od.GetEnforcingFailurePercentageLocalOrigin().GetValue() > 0 {
		return nil, fmt.Errorf("outlier_detection: failure percentage ejection is not supported")
	}
	c := &outlierConfig{
		consec5xx:       pct(od.GetConsecutive_5Xx(), od.GetConsecutive_5Xx() != nil, 5),
		consecGateway:   pct(od.GetConsecutiveGatewayFailure(), od.GetConsecutiveGatewayFailure() != nil, 5),
		enforce5xx:      pct(od.GetEnforcingConsecutive_5Xx(), od.GetEnforcingConsecutive_5Xx() != nil, 100),
		enforceGateway:  pct(od.GetEnforcingConsecutiveGatewayFailure(), od.GetEnforcingConsecutiveGatewayFailure() != nil, 0),
		maxEjectPercent: pct(od.GetMaxEjectionPercent(), od.GetMaxEjectionPercent() != nil, 10),
		interval:        defaultOutlierInterval,
		baseEjection:    defaultBaseEjectionTime,
		maxEjection:     defaultMaxEjectionTime,
	}
	if d := od.GetInterval(); d != nil {
		c.interval = d.AsDuration()
	}
	if d := od.GetBaseEjectionTime(); d != nil {
		c.baseEjection = d.AsDuration()
	}
	if d := od.GetMaxEjectionTime(); d != nil {
		c.maxEjection = d.AsDuration()
	}
	c.maxEjection = max(c.maxEjection, c.baseEjection)
	if c.interval <= 0 {
		return nil, fmt.Errorf("outlier_detection.interval must be positive")
	}
	return c, nil
}

// ejectedAt reports whether the host is ejected at now, returning it to
// service once its ejection time passed. The caller holds hs.mu.
func (hs *hostState) ejectedAt(now time.Time) bool {
	if hs.ejected && !now.Before(hs.ejectedUntil) {
		hs.ejected = false
		hs.returnedAt = now
	}
	return hs.ejected
}

// outcome of one request for outlier detection.
type outcome int

const (
	outcomeSuccess outcome = iota
	outcome5xx             // 500, 501, 505...
	outcomeGateway         // 502, 503, 504, connect failure, reset, timeout
)

func outcomeOf(status int) outcome {
	switch {
	case status == 502 || status == 503 || status == 504:
		return outcomeGateway
	case status >= 500:
		return outcome5xx
	}
	return outcomeSuccess
}

// record feeds one result into outlier detection and ejects the host when
// a consecutive-errors threshold is reached.
func (c *Cluster) record(h *Host, o outcome) {
	od := c.cfg.outlier
	if od == nil || h == nil {
		return
	}
	hs := h.state
	hs.mu.Lock()
	switch o {
	case outcomeSuccess:
		hs.consec5xx, hs.consecGateway = 0, 0
		hs.mu.Unlock()
		return
	case outcome5xx:
		hs.consec5xx++
		hs.consecGateway = 0
	case outcomeGateway:
		hs.consec5xx++
		hs.consecGateway++
	}
	eject := false
	if od.consec5xx > 0 && hs.consec5xx >= od.consec5xx && c.enforced(od.enforce5xx) {
		eject = true
	}
	if od.consecGateway > 0 && hs.consecGateway >= od.consecGateway && c.enforced(od.enforceGateway) {
		eject = true
	}
	now := c.now()
	already := hs.ejectedAt(now)
	hs.mu.Unlock()
	if !eject || already {
		return
	}
	if !c.mayEject(now) {
		return
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.ejectedAt(now) {
		return
	}
	// The multiplier decays by one for every interval the host stayed in
	// service since it last returned.
	if hs.ejections > 0 && !hs.returnedAt.IsZero() {
		decay := int(now.Sub(hs.returnedAt) / od.interval)
		hs.ejections = max(0, hs.ejections-decay)
	}
	hs.ejections++
	d := od.baseEjection * time.Duration(hs.ejections)
	d = min(d, od.maxEjection)
	hs.ejected = true
	hs.ejectedUntil = c.nextTick(now.Add(d))
	hs.consec5xx, hs.consecGateway = 0, 0
	c.log.Info("outlier detection ejected host", "host", h.Address(), "for", d, "times", hs.ejections)
}

// nextTick rounds t up to the next outlier detection interval: like
// Envoy, hosts return to service when the interval timer fires after
// their ejection time passed.
func (c *Cluster) nextTick(t time.Time) time.Time {
	iv := c.cfg.outlier.interval
	since := t.Sub(c.state.created)
	if since <= 0 {
		return t
	}
	ticks := (since + iv - 1) / iv
	return c.state.created.Add(ticks * iv)
}

func (c *Cluster) enforced(pct uint32) bool {
	if pct >= 100 {
		return true
	}
	if pct == 0 {
		return false
	}
	return uint32(c.state.randN(100)) < pct
}

// mayEject applies max_ejection_percent: a host may be ejected while the
// ejected share of the cluster is below it.
func (c *Cluster) mayEject(now time.Time) bool {
	all := c.allHosts()
	total, ejected := len(all), 0
	for _, h := range all {
		if h.Ejected(now) {
			ejected++
		}
	}
	if total == 0 {
		return true
	}
	return uint32(100*ejected/total) < c.cfg.outlier.maxEjectPercent
}
