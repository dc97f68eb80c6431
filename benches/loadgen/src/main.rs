//! ferroloop's benchmark load tools, std-only:
//!
//! * `loadgen echo --addr HOST:PORT|unix:PATH --conns N --size BYTES --seconds S`
//!   drives N connections in a closed loop (send a message, read the whole
//!   echo, check it, repeat) and prints one JSON line of results.
//! * `loadgen server --addr HOST:PORT --size BYTES` is the ceiling: a
//!   single-threaded echo server in plain Rust (epoll).
//! * `loadgen http --addr HOST:PORT --conns N --seconds S` drives HTTP/1.1
//!   keep-alive GET requests and checks each response is complete.
//! * `loadgen udp --addr HOST:PORT --conns N --size BYTES --seconds S` is
//!   `echo` over UDP: N sockets, one datagram in flight each.

mod echo;
mod http;
mod poll;
mod server;
mod udp;

use std::process::exit;

fn usage() -> ! {
    eprintln!(
        "usage: loadgen echo --addr ADDR --conns N --size BYTES --seconds S\n\
         \x20      loadgen http --addr ADDR --conns N --seconds S [--path /]\n\
         \x20      loadgen udp --addr HOST:PORT --conns N --size BYTES --seconds S\n\
         \x20      loadgen server --addr ADDR\n\
         ADDR is HOST:PORT or unix:PATH"
    );
    exit(2)
}

pub struct Args {
    pub addr: String,
    pub conns: usize,
    pub size: usize,
    pub seconds: f64,
    pub path: String,
}

fn parse(mut it: impl Iterator<Item = String>) -> Args {
    let mut args = Args {
        addr: String::new(),
        conns: 10,
        size: 1024,
        seconds: 5.0,
        path: "/".into(),
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--addr" => args.addr = value,
            "--conns" => args.conns = value.parse().unwrap_or_else(|_| usage()),
            "--size" => args.size = value.parse().unwrap_or_else(|_| usage()),
            "--seconds" => args.seconds = value.parse().unwrap_or_else(|_| usage()),
            "--path" => args.path = value,
            _ => usage(),
        }
    }
    if args.addr.is_empty() || args.conns == 0 || args.size == 0 {
        usage();
    }
    args
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let command = argv.next().unwrap_or_else(|| usage());
    let args = parse(argv);
    let outcome = match command.as_str() {
        "echo" => echo::run(&args),
        "http" => http::run(&args),
        "server" => server::run(&args),
        "udp" => udp::run(&args),
        _ => usage(),
    };
    if let Err(err) = outcome {
        eprintln!("loadgen {command}: {err}");
        exit(1);
    }
}
