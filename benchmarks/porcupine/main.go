// Porcupine (github.com/anishathalye/porcupine) checking its own Jepsen etcd logs, as its test suite
// does: the reference that benchmarks/porcupine_bench.py times cachecert's linearizability search
// against, side by side on the same files and the same machine.
//
// parseJepsenLog and etcdModel are Porcupine's own (porcupine_test.go, MIT licence, Anish Athalye),
// copied because Go does not export a package's test code. For each file given, this prints one JSON
// line: the file, Porcupine's verdict, and the median CPU time (user + system, whole process) of
// -repeats checks, and the median wall time (parsing excluded).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
)

type etcdInput struct {
	op   uint8 // 0 => read, 1 => write, 2 => cas
	arg1 int   // used for write, or for CAS from argument
	arg2 int   // used for CAS to argument
}

type etcdOutput struct {
	ok      bool // used for CAS
	exists  bool // used for read
	value   int  // used for read
	unknown bool // used when operation times out
}

var etcdModel = porcupine.Model{
	Init: func() interface{} { return -1000000 }, // -1000000 corresponds with nil
	Step: func(state interface{}, input interface{}, output interface{}) (bool, interface{}) {
		st := state.(int)
		inp := input.(etcdInput)
		out := output.(etcdOutput)
		if inp.op == 0 {
			ok := (!out.exists && st == -1000000) || (out.exists && st == out.value) || out.unknown
			return ok, state
		} else if inp.op == 1 {
			return true, inp.arg1
		}
		ok := (inp.arg1 == st && out.ok) || (inp.arg1 != st && !out.ok) || out.unknown
		result := st
		if inp.arg1 == st {
			result = inp.arg2
		}
		return ok, result
	},
}

var (
	invokeRead  = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:invoke\s+:read\s+nil$`)
	invokeWrite = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:invoke\s+:write\s+(\d+)$`)
	invokeCas   = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:invoke\s+:cas\s+\[(\d+)\s+(\d+)\]$`)
	returnRead  = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:ok\s+:read\s+(nil|\d+)$`)
	returnWrite = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:ok\s+:write\s+(\d+)$`)
	returnCas   = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:(ok|fail)\s+:cas\s+\[(\d+)\s+(\d+)\]$`)
	timeoutRead = regexp.MustCompile(`^INFO\s+jepsen\.util\s+-\s+(\d+)\s+:fail\s+:read\s+:timed-out$`)
)

func parseJepsenLog(filename string) ([]porcupine.Event, error) {
	file, err := os.Open(filename)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var events []porcupine.Event
	id := 0
	procIdMap := make(map[int]int)
	call := func(proc int, in etcdInput) {
		events = append(events, porcupine.Event{ClientId: proc, Kind: porcupine.CallEvent, Value: in, Id: id})
		procIdMap[proc] = id
		id++
	}
	ret := func(proc int, out etcdOutput) {
		matchId := procIdMap[proc]
		delete(procIdMap, proc)
		events = append(events, porcupine.Event{ClientId: proc, Kind: porcupine.ReturnEvent, Value: out, Id: matchId})
	}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		line := sc.Text()
		if a := invokeRead.FindStringSubmatch(line); a != nil {
			call(atoi(a[1]), etcdInput{op: 0})
		} else if a := invokeWrite.FindStringSubmatch(line); a != nil {
			call(atoi(a[1]), etcdInput{op: 1, arg1: atoi(a[2])})
		} else if a := invokeCas.FindStringSubmatch(line); a != nil {
			call(atoi(a[1]), etcdInput{op: 2, arg1: atoi(a[2]), arg2: atoi(a[3])})
		} else if a := returnRead.FindStringSubmatch(line); a != nil {
			out := etcdOutput{}
			if a[2] != "nil" {
				out = etcdOutput{exists: true, value: atoi(a[2])}
			}
			ret(atoi(a[1]), out)
		} else if a := returnWrite.FindStringSubmatch(line); a != nil {
			ret(atoi(a[1]), etcdOutput{})
		} else if a := returnCas.FindStringSubmatch(line); a != nil {
			ret(atoi(a[1]), etcdOutput{ok: a[2] == "ok"})
		} else if a := timeoutRead.FindStringSubmatch(line); a != nil {
			ret(atoi(a[1]), etcdOutput{unknown: true})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	procs := make([]int, 0, len(procIdMap))
	for proc := range procIdMap {
		procs = append(procs, proc)
	}
	sort.Ints(procs) // Porcupine ranges over the map; sorted here so every run checks the same history
	for _, proc := range procs {
		ret(proc, etcdOutput{unknown: true})
	}
	return events, nil
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func cpu() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func main() {
	repeats := flag.Int("repeats", 3, "checks per file; the median CPU and wall times are printed")
	timeout := flag.Duration("timeout", 0, "per check (0: none, as CheckEvents); past it the verdict is unknown")
	flag.Parse()
	enc := json.NewEncoder(os.Stdout)
	for _, f := range flag.Args() {
		events, err := parseJepsenLog(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		var cpus, walls []float64
		var res porcupine.CheckResult
		for i := 0; i < *repeats; i++ {
			t, w := cpu(), time.Now()
			res = porcupine.CheckEventsTimeout(etcdModel, events, *timeout)
			cpus = append(cpus, cpu()-t)
			walls = append(walls, time.Since(w).Seconds())
		}
		sort.Float64s(cpus)
		sort.Float64s(walls)
		verdict := map[porcupine.CheckResult]any{porcupine.Ok: true, porcupine.Illegal: false}[res]
		if res == porcupine.Unknown {
			verdict = "unknown"
		}
		_ = enc.Encode(map[string]any{"file": f, "linearizable": verdict, "cpu_s": cpus[len(cpus)/2],
			"wall_s": walls[len(walls)/2], "events": len(events)})
	}
}
