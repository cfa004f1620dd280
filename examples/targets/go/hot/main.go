// Loop target for bench/hit_cost.sh, the Go twin of hot.c: after a line on stdin it calls
// step N times and prints the time per iteration. Usage: hot N
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"time"
)

var sink int64

//go:noinline
func step(i int64) int64 {
	sink += i // PROBE: go-hot-step
	return sink
}

func main() {
	n, _ := strconv.ParseInt(os.Args[1], 10, 64)
	fmt.Printf("hot ready pid=%d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	start := time.Now()
	for i := int64(0); i < n; i++ {
		step(i)
	}
	fmt.Printf("ns_per_iter=%.1f\n", float64(time.Since(start).Nanoseconds())/float64(n))
}
