// A stand-in for kube-proxy's userspace proxier (removed from Kubernetes in 1.26), written from
// its documented behaviour for scripts/bench/userspace: the peer knet's userspace mode is
// compared with. Standard library only; built by the bench with Debian's golang-go, no modules:
//
//	GO111MODULE=off go build -o kube-proxy-userspace main.go
//	kube-proxy-userspace -tcp LISTEN=EP[,EP...] -udp LISTEN=EP[,EP...] ...
//
// LISTEN and EP are "ip:port". It prints "ready" once every socket is bound; the bench steers a
// service address to LISTEN with the same portal rules knet gets.
//
// What it does, per the proxier it stands in for:
//   - TCP: one listener per service port; per accepted connection a goroutine dials an
//     endpoint with up to four tries (timeouts 250 ms, 500 ms, 1 s, 2 s), each asking the
//     round robin for the next endpoint; then two goroutines copy with io.Copy, one per
//     direction (on Linux, TCPConn.ReadFrom splices between the sockets); when either copy
//     ends, both connections are closed.
//   - UDP: one socket per service port read into a 4096-byte buffer; per client address a
//     socket connected to an endpoint (chosen the same way), written with a deadline of the
//     idle timeout (250 ms) re-armed per datagram, and a goroutine that reads the endpoint's
//     replies (deadline re-armed per reply) and sends them back from the service socket; the
//     flow goes when a read times out.
//   - The round robin is one mutex-guarded index per service port. (ClientIP affinity is not
//     reproduced: the bench's services have none.)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

var dialTimeouts = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}

const udpIdleTimeout = 250 * time.Millisecond

type roundRobin struct {
	mu        sync.Mutex
	endpoints []string
	next      int
}

func (r *roundRobin) pick() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.endpoints[r.next%len(r.endpoints)]
	r.next++
	return e
}

func dial(network string, lb *roundRobin) (net.Conn, error) {
	for _, timeout := range dialTimeouts {
		c, err := net.DialTimeout(network, lb.pick(), timeout)
		if err == nil {
			return c, nil
		}
	}
	return nil, errors.New("no endpoint answered")
}

func copyThenClose(dst, src net.Conn, wg *sync.WaitGroup) {
	defer wg.Done()
	io.Copy(dst, src)
	dst.Close()
	src.Close()
}

func serveTCP(listen string, lb *roundRobin) error {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				fmt.Fprintln(os.Stderr, "accept:", err)
				return
			}
			go func() {
				out, err := dial("tcp", lb)
				if err != nil {
					in.Close()
					return
				}
				var wg sync.WaitGroup
				wg.Add(2)
				go copyThenClose(in, out, &wg)
				go copyThenClose(out, in, &wg)
				wg.Wait()
			}()
		}
	}()
	return nil
}

type udpFlows struct {
	mu      sync.Mutex
	clients map[string]net.Conn
}

func serveUDP(listen string, lb *roundRobin) error {
	addr, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		return err
	}
	sock, err := net.ListenUDP("udp", addr)
	if err != nil {
		return err
	}
	flows := &udpFlows{clients: map[string]net.Conn{}}
	go func() {
		var buf [4096]byte
		for {
			n, client, err := sock.ReadFrom(buf[:])
			if err != nil {
				fmt.Fprintln(os.Stderr, "udp read:", err)
				return
			}
			conn, err := flows.get(sock, client, lb)
			if err != nil {
				continue
			}
			conn.SetDeadline(time.Now().Add(udpIdleTimeout))
			conn.Write(buf[:n])
		}
	}()
	return nil
}

func (f *udpFlows) get(sock *net.UDPConn, client net.Addr, lb *roundRobin) (net.Conn, error) {
	key := client.String()
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.clients[key]; ok {
		return c, nil
	}
	c, err := dial("udp", lb)
	if err != nil {
		return nil, err
	}
	f.clients[key] = c
	go func() {
		defer c.Close()
		var buf [4096]byte
		for {
			n, err := c.Read(buf[:])
			if err != nil {
				break
			}
			c.SetDeadline(time.Now().Add(udpIdleTimeout))
			sock.WriteTo(buf[:n], client)
		}
		f.mu.Lock()
		delete(f.clients, key)
		f.mu.Unlock()
	}()
	return c, nil
}

type portList []string

func (p *portList) String() string     { return strings.Join(*p, " ") }
func (p *portList) Set(s string) error { *p = append(*p, s); return nil }

func parse(spec string) (string, *roundRobin, error) {
	listen, eps, ok := strings.Cut(spec, "=")
	if !ok || eps == "" {
		return "", nil, fmt.Errorf("%q: expected LISTEN=EP[,EP...]", spec)
	}
	return listen, &roundRobin{endpoints: strings.Split(eps, ",")}, nil
}

func main() {
	var tcp, udp portList
	flag.Var(&tcp, "tcp", "LISTEN=EP[,EP...]: a TCP service port (repeatable)")
	flag.Var(&udp, "udp", "LISTEN=EP[,EP...]: a UDP service port (repeatable)")
	flag.Parse()
	for _, group := range []struct {
		specs portList
		serve func(string, *roundRobin) error
	}{{tcp, serveTCP}, {udp, serveUDP}} {
		for _, spec := range group.specs {
			listen, lb, err := parse(spec)
			if err == nil {
				err = group.serve(listen, lb)
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
	}
	fmt.Println("ready")
	select {}
}
