package main

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// cpuUse is the CPU a phase of the run took: how busy the whole machine
// was, and the cores each process of the setup used. Every process shares
// the machine's cores, so a target missed while the machine is saturated
// says what bounds it.
type cpuUse struct {
	Seconds        float64 `json:"seconds"`
	MachineBusy    float64 `json:"machineBusyFraction"`
	HubAPIServer   float64 `json:"hubAPIServerCores"`
	MemberServer   float64 `json:"memberAPIServerCores"`
	Operator       float64 `json:"operatorCores"`
	Sidecar        float64 `json:"sidecarCores"`
	BenchProcess   float64 `json:"benchCores"`
	HubCPUSeconds  float64 `json:"hubAPIServerCPUSeconds"`
	OperatorCPUSec float64 `json:"operatorCPUSeconds"`
}

// cpuMeter measures a cpuUse from its start to stop.
type cpuMeter struct {
	pids      [5]int // hub, member, operator, sidecar, bench
	at        [5]float64
	busy, all float64
	start     time.Time
}

func (e *env) startCPU() *cpuMeter {
	m := &cpuMeter{start: time.Now()}
	m.pids[0], _ = apiServerPID(e.hubCfg.Host)
	if len(e.memberCfg) > 0 {
		m.pids[1], _ = apiServerPID(e.memberCfg[0].Host)
	}
	if e.operator != nil {
		m.pids[2] = e.operator.cmd.Process.Pid
	}
	if e.sidecar != nil {
		m.pids[3] = e.sidecar.cmd.Process.Pid
	}
	m.pids[4] = os.Getpid()
	for i, pid := range m.pids {
		m.at[i] = processCPU(pid)
	}
	m.busy, m.all = machineCPU()
	return m
}

func (m *cpuMeter) stop() cpuUse {
	secs := time.Since(m.start).Seconds()
	var used [5]float64
	for i, pid := range m.pids {
		if pid != 0 {
			used[i] = processCPU(pid) - m.at[i]
		}
	}
	busy, all := machineCPU()
	cores := func(s float64) float64 { return math.Round(s/secs*100) / 100 }
	u := cpuUse{
		Seconds:      math.Round(secs*10) / 10,
		HubAPIServer: cores(used[0]), MemberServer: cores(used[1]), Operator: cores(used[2]),
		Sidecar: cores(used[3]), BenchProcess: cores(used[4]),
		HubCPUSeconds: math.Round(used[0]*100) / 100, OperatorCPUSec: math.Round(used[2]*100) / 100,
	}
	if all > m.all {
		u.MachineBusy = math.Round((busy-m.busy)/(all-m.all)*100) / 100
	}
	return u
}

// machineCPU is the machine's busy and total CPU time so far, in clock
// ticks, from the first line of /proc/stat (idle and iowait are not busy).
func machineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i >= 8 { // guest time is counted in user already
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// busy is the machine's busy share as a percentage, for a report line.
func (u cpuUse) busy() string { return strconv.Itoa(int(math.Round(u.MachineBusy*100))) + "%" }
