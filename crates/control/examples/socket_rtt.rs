//! Benchmark: round trip of one command over a running phone's control socket.
//! Usage: `socket_rtt SOCKET [COUNT] [LINE]` — prints p50/p90/p99 in microseconds.
#![allow(clippy::unwrap_used, unsafe_code)] // test code: a failed unwrap is a failed test

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: socket_rtt SOCKET [COUNT] [LINE]");
        std::process::exit(2);
    };
    let count: usize = args.next().and_then(|c| c.parse().ok()).unwrap_or(5000);
    let line = args.next().unwrap_or_else(|| "STATUS".into());
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot connect to {path}: {e}");
            std::process::exit(2);
        }
    };
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let mut reader = BufReader::new(stream);
    let request = format!("{line}\n");
    let mut reply = String::new();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + 200 {
        reply.clear();
        let t = Instant::now();
        if writer.write_all(request.as_bytes()).is_err() || reader.read_line(&mut reply).is_err() {
            eprintln!("connection lost");
            std::process::exit(1);
        }
        let us = t.elapsed().as_secs_f64() * 1e6;
        if i >= 200 {
            samples.push(us); // the first 200 warm up
        }
    }
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!(
        "socket round trip '{line}' x{count}: p50 {:.1} us, p90 {:.1} us, p99 {:.1} us (reply: {})",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        reply.trim()
    );
}
