// The benchmark's load generator and UDP echo server, in C so the client is not what limits
// the figures (a Node client saturates long before haproxy does). Compiled once with gcc into
// a temp dir by scripts/bench/userspace-bench.ts.
//   loadgen close|keepalive HOST PORT CONCURRENCY SECONDS  -> "rate N" (responses/s)
//   loadgen udp HOST PORT WINDOW SECONDS                   -> "rate N" (echoed datagrams/s)
//   loadgen udpecho HOST PORT                              (echoes until killed)
export const LOADGEN_C = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char REQ[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
static const char REQ_CLOSE[] = "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
static struct sockaddr_in dst;
static int keepalive;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }

typedef struct { int fd; int got; char buf[512]; } slot;

static void start(int ep, slot *s) {
  s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  s->got = 0;
  connect(s->fd, (struct sockaddr *)&dst, sizeof dst);
  struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = s };
  epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
}

static void send_req(int ep, slot *s) {
  const char *r = keepalive ? REQ : REQ_CLOSE;
  size_t n = keepalive ? sizeof REQ - 1 : sizeof REQ_CLOSE - 1;
  if (write(s->fd, r, n) != (ssize_t)n) { perror("write"); exit(2); }
  struct epoll_event ev = { .events = EPOLLIN, .data.ptr = s };
  epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
}

static int tcp_bench(int conc, double secs) {
  int ep = epoll_create1(0);
  slot *slots = calloc(conc, sizeof *slots);
  for (int i = 0; i < conc; i++) start(ep, &slots[i]);
  long done = 0, errors = 0;
  double t0 = now(), end = t0 + secs;
  struct epoll_event evs[256];
  while (now() < end) {
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      slot *s = evs[i].data.ptr;
      if (evs[i].events & EPOLLOUT) {
        int err = 0; socklen_t l = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { errors++; close(s->fd); start(ep, s); continue; }
        send_req(ep, s);
        continue;
      }
      ssize_t r = read(s->fd, s->buf + s->got, sizeof s->buf - 1 - s->got);
      if (r > 0) {
        s->got += r; s->buf[s->got] = 0;
        // One complete response: headers plus the 2-byte body "ok".
        char *h = strstr(s->buf, "\r\n\r\n");
        if (keepalive && h && s->buf + s->got >= h + 6) { done++; s->got = 0; send_req(ep, s); }
        else if (s->got >= (int)sizeof s->buf - 1) s->got = 0;
        continue;
      }
      if (r < 0 && errno == EAGAIN) continue;
      // EOF (close mode: the response is complete) or an error.
      if (!keepalive && r == 0 && strstr(s->buf, "\r\n\r\n")) done++; else errors++;
      close(s->fd);
      start(ep, s);
    }
  }
  double el = now() - t0;
  printf("rate %.0f errors %ld\n", done / el, errors);
  return 0;
}

static int udp_bench(int window, double secs) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst)) { perror("connect"); return 2; }
  struct timeval tv = { 0, 20000 };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char pkt[64]; memset(pkt, 'u', sizeof pkt);
  long got = 0;
  double t0 = now(), end = t0 + secs;
  for (int i = 0; i < window; i++) send(fd, pkt, sizeof pkt, 0);
  while (now() < end) {
    char b[2048];
    ssize_t r = recv(fd, b, sizeof b, 0);
    if (r > 0) { got++; send(fd, pkt, sizeof pkt, 0); }
    else for (int i = 0; i < window; i++) send(fd, pkt, sizeof pkt, 0); // losses: refill the window
  }
  printf("rate %.0f\n", got / (now() - t0));
  return 0;
}

static int udp_echo(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  int sz = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  if (bind(fd, (struct sockaddr *)&dst, sizeof dst)) { perror("bind"); return 2; }
  printf("ready\n"); fflush(stdout);
  for (;;) {
    char b[2048]; struct sockaddr_in from; socklen_t l = sizeof from;
    ssize_t r = recvfrom(fd, b, sizeof b, 0, (struct sockaddr *)&from, &l);
    if (r > 0) sendto(fd, b, r, 0, (struct sockaddr *)&from, l);
  }
}

int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: loadgen close|keepalive|udp|udpecho HOST PORT [N SECONDS]\n"); return 2; }
  dst.sin_family = AF_INET;
  dst.sin_port = htons(atoi(argv[3]));
  if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
  if (!strcmp(argv[1], "udpecho")) return udp_echo();
  if (argc < 6) return 2;
  int n = atoi(argv[4]); double secs = atof(argv[5]);
  if (!strcmp(argv[1], "udp")) return udp_bench(n, secs);
  keepalive = !strcmp(argv[1], "keepalive");
  return tcp_bench(n, secs);
}
`;
