// Sample Go service for Periscope's tests: several goroutines handling requests, every value
// kind Delve shows, a method with a pointer receiver, a generic function, and panics (one
// recovered per request, and with `crash` as argument one that is not, once a line comes
// on stdin; with `fatal`, a fatal error: concurrent map writes). With `calls N`, once a line
// comes on stdin it calls tick N times, printing each argument, then the number of calls, and
// exits.
//
// Relations the tests rely on, for request n (n = 1, 2, …) in handle:
//   req.ID == n; req.Name == "user-" + n%7; len(req.Tags) == n%4; req.Tags[i] == "t" + i;
//   req.Headers has n%3+1 entries, Headers[i].Name == "h" + i, Headers[i].Value == i*10;
//   req.Attrs has n%5 entries "k"+i → i; req.Scores[i] == n + i (3 of them);
//   req.Ratio == n / 4 (float); req.Ok == (n%2 == 0); req.Grade == 'A' + n%3;
//   req.Err is nil when n%3 != 0, else an error "bad request n"; req.Any is n (int) when n%2 == 0,
//   else the string "s-n"; req.Wait == n milliseconds; req.Queue has cap 8 and len n%4.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/acme/shop/cart"
)

type Header struct {
	Name  string
	Value int
}

type Request struct {
	ID      int64
	Name    string
	Tags    []string
	Headers []Header
	Attrs   map[string]int
	Scores  [3]int32
	Ratio   float64
	Ok      bool
	Grade   rune
	Err     error
	Any     interface{}
	Wait    time.Duration
	Queue   chan int
	Next    *Request
}

// Cache is a pointer-receiver method holder.
type Cache struct {
	mu   sync.Mutex
	hits int
	seen map[int64]string
}

func (c *Cache) get(id int64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.seen[id]
	if ok {
		c.hits++ // PROBE: cache-hit
	}
	return v, ok
}

func (c *Cache) put(id int64, v string) {
	c.mu.Lock()
	c.seen[id] = v
	c.mu.Unlock()
}

// Sum adds a slice of any number type: a generic function (instances for int and float64).
func Sum[T int | int64 | float64](xs []T) T {
	var s T
	for _, x := range xs {
		s += x
	}
	return s // PROBE: generic-sum
}

func build(n int64) *Request {
	req := &Request{ID: n, Name: "user-" + strconv.FormatInt(n%7, 10), Ratio: float64(n) / 4, Ok: n%2 == 0, Grade: rune('A' + n%3), Wait: time.Duration(n) * time.Millisecond}
	for i := int64(0); i < n%4; i++ {
		req.Tags = append(req.Tags, "t"+strconv.FormatInt(i, 10))
	}
	for i := 0; i < int(n%3)+1; i++ {
		req.Headers = append(req.Headers, Header{Name: "h" + strconv.Itoa(i), Value: i * 10})
	}
	req.Attrs = map[string]int{}
	for i := 0; i < int(n%5); i++ {
		req.Attrs["k"+strconv.Itoa(i)] = i
	}
	for i := range req.Scores {
		req.Scores[i] = int32(n) + int32(i)
	}
	if n%3 == 0 {
		req.Err = errors.New("bad request " + strconv.FormatInt(n, 10))
	}
	if n%2 == 0 {
		req.Any = int(n)
	} else {
		req.Any = "s-" + strconv.FormatInt(n, 10)
	}
	req.Queue = make(chan int, 8)
	for i := int64(0); i < n%4; i++ {
		req.Queue <- int(i)
	}
	return req
}

func handle(req *Request, c *Cache, worker int) (total int64) {
	defer func() {
		if r := recover(); r != nil {
			total = -1
		}
	}()
	cost := int64(len(req.Name)) + int64(len(req.Tags)) // PROBE: handle
	if _, ok := c.get(req.ID % 16); !ok {
		c.put(req.ID%16, req.Name)
	}
	if req.ID%10 == 7 {
		var idx = int(req.ID % 5) + 3
		_ = req.Scores[idx%8-idx%8+idx%3] // in range
		panic(fmt.Sprintf("request %d refused", req.ID)) // PROBE: recovered-panic
	}
	return cost + int64(Sum([]int{1, 2, 3})) + int64(Sum([]float64{0.5, 0.5}))
}

func worker(w int, c *Cache, sleep time.Duration, wg *sync.WaitGroup) {
	defer wg.Done()
	for n := int64(w) + 1; ; n += 2 {
		req := build(n)
		handle(req, c, w)
		time.Sleep(sleep)
	}
}

// tick takes one int argument (arg0 in Go's register ABI).
//
//go:noinline
func tick(i int) int {
	return i * 3 // PROBE: tick
}

func calls(n int) {
	fmt.Printf("shop ready pid=%d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	sum := 0
	for i := 0; i < n; i++ {
		fmt.Printf("tick %d\n", 100+i)
		sum += tick(100 + i)
	}
	fmt.Printf("calls=%d sum=%d\n", n, sum)
}

func crash() {
	xs := []int{1, 2, 3}
	i := len(os.Args) + 5
	fmt.Println(xs[i]) // PROBE: crash (index out of range [7] with length 3)
}

// racyWrites writes one map from two goroutines: Go stops the program with
// "fatal error: concurrent map writes", which no recover can catch.
func racyWrites() {
	m := map[int]int{}
	for g := 0; g < 2; g++ {
		go func() {
			for i := 0; ; i++ {
				m[i%64] = i
			}
		}()
	}
	time.Sleep(10 * time.Second)
}

func main() {
	sleep := 2 * time.Millisecond
	if len(os.Args) > 2 && os.Args[1] == "calls" {
		n, _ := strconv.Atoi(os.Args[2])
		calls(n)
		return
	}
	if len(os.Args) > 1 && (os.Args[1] == "crash" || os.Args[1] == "fatal") {
		// Crashes when told to (a line on stdin), so a debugger can attach first.
		fmt.Printf("shop ready pid=%d\n", os.Getpid())
		bufio.NewReader(os.Stdin).ReadString('\n')
		if os.Args[1] == "fatal" {
			racyWrites()
		}
		crash()
	}
	if len(os.Args) > 1 {
		if us, err := strconv.Atoi(os.Args[1]); err == nil {
			sleep = time.Duration(us) * time.Microsecond
		}
	}
	shop := cart.New("ann")
	shop.Add("apple", 2, 0.5)
	shop.Add("pear", 1, 1.25)
	fmt.Printf("shop ready pid=%d\n", os.Getpid())
	c := &Cache{seen: map[int64]string{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go worker(0, c, sleep, &wg)
	go worker(1, c, sleep, &wg)
	for {
		shop.Add("apple", 1, 0.5)
		_ = shop.Total()
		time.Sleep(50 * time.Millisecond)
	}
}
