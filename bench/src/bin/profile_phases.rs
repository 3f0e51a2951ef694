//! `profile-phases`: where xsigate's user-space time a request goes, by phase of the lean lane.
//! Reads `perf script -F ip,sym,dso` of a profile recorded with DWARF call graphs
//! (`perf record --call-graph dwarf`) on standard input, and gives each user-space sample to
//! the first phase that a frame of its stack, walked from the leaf towards the root, belongs
//! to; kernel samples are counted apart. Prints each phase's share of the user-space samples.
//!
//! Inlining decides what a frame is: code of Pingora or the hooks that the compiler inlined
//! into the lane's or the edge's own functions counts as their "glue". A phase's share is
//! therefore a floor for that phase, and the glue's an upper bound for the glue.

use std::io::{BufRead as _, BufReader};

/// A phase, and the substrings a frame's symbol holds when the frame belongs to it, in order
/// of precedence: a frame matching several phases belongs to the first.
const PHASES: &[(&str, &[&str])] = &[
    (
        "edge: the client's head read and checked",
        &["xsigate::edge::head::read", "xsigate::edge::framing"],
    ),
    (
        "Pingora: the client's head parsed again, the session built",
        &["Session::new_h1", "v1::server::HttpSession::read_request"],
    ),
    (
        "hooks: routing, sessions, request plugins",
        &["route_request"],
    ),
    ("hooks: the upstream peer chosen", &["choose_peer"]),
    (
        "lane: the request copied, hop-by-hop fields removed",
        &["http::headers::upstream_request", "connection_nominations"],
    ),
    (
        "hooks: the upstream request prepared",
        &["prepare_upstream_request"],
    ),
    (
        "Pingora: the request head written upstream",
        &["write_request_header"],
    ),
    (
        "Pingora: the answer's head read and parsed",
        &["read_resp_header_parts"],
    ),
    (
        "hooks: the answer scrubbed and completed",
        &["upstream_answered", "prepare_response"],
    ),
    (
        "Pingora: the answer's head written",
        &["write_response_header"],
    ),
    (
        "Pingora: bodies read and written",
        &[
            "read_body_bytes",
            "write_response_body",
            "write_body",
            "read_request_body",
            "finish_body",
        ],
    ),
    ("hooks: metrics and the access log", &["log_request"]),
    (
        "lane: connections kept and reused",
        &[
            "Session::finish",
            "::reuse",
            "respect_keepalive",
            "take_for",
        ],
    ),
    (
        "hooks: the request context made and dropped",
        &[
            "new_ctx",
            "drop_in_place<xsigate::http::context::RequestCtx>",
        ],
    ),
    ("lane: glue", &["LeanLane"]),
    ("edge: glue", &["xsigate::edge"]),
    ("tokio: scheduler, timers, reactor", &["tokio::runtime"]),
];

/// One frame of `perf script -F ip,sym,dso`: `<ip> <symbol> (<dso>)`.
struct Frame {
    symbol: String,
    kernel: bool,
}

fn frame(line: &str) -> Option<Frame> {
    let line = line.trim();
    let (_ip, rest) = line.split_once(' ')?;
    let (symbol, dso) = rest.rsplit_once(" (")?;
    Some(Frame {
        symbol: symbol.to_owned(),
        kernel: dso.contains("kernel"),
    })
}

fn phase_of(stack: &[Frame]) -> Option<usize> {
    stack.iter().find_map(|frame| {
        PHASES
            .iter()
            .position(|(_, parts)| parts.iter().any(|part| frame.symbol.contains(part)))
    })
}

#[derive(Default)]
struct Tally {
    samples: u64,
    kernel: u64,
    phases: Vec<u64>,
    unplaced: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            phases: vec![0; PHASES.len()],
            ..Self::default()
        }
    }

    fn add(&mut self, stack: &[Frame]) {
        let Some(leaf) = stack.first() else {
            return;
        };
        self.samples += 1;
        if leaf.kernel {
            self.kernel += 1;
            return;
        }
        match phase_of(stack) {
            Some(index) => self.phases[index] += 1,
            None => self.unplaced += 1,
        }
    }
}

#[expect(clippy::print_stdout, reason = "the report is the program's output")]
fn report(tally: &Tally) {
    let user = tally.samples - tally.kernel;
    if user == 0 {
        println!("no user-space samples: was the profile recorded with --call-graph dwarf?");
        return;
    }
    let share = |n: u64| 100.0 * n as f64 / user as f64;
    println!(
        "{} samples, {:.1} % in the kernel; shares of the {user} in user space:",
        tally.samples,
        100.0 * tally.kernel as f64 / tally.samples as f64,
    );
    let mut rows: Vec<(&str, u64)> = PHASES
        .iter()
        .zip(&tally.phases)
        .map(|((name, _), n)| (*name, *n))
        .collect();
    rows.push(("elsewhere (threads outside the lane)", tally.unplaced));
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    for (name, n) in rows {
        println!("{:6.1} %  {name}", share(n));
    }
}

fn main() {
    let mut tally = Tally::new();
    let mut stack = Vec::new();
    for line in BufReader::new(std::io::stdin().lock()).lines() {
        let Ok(line) = line else {
            eprintln!("profile-phases: standard input is not text");
            std::process::exit(1);
        };
        if line.trim().is_empty() {
            tally.add(&stack);
            stack.clear();
        } else if let Some(frame) = frame(&line) {
            stack.push(frame);
        }
    }
    tally.add(&stack);
    report(&tally);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(lines: &[&str]) -> Vec<Frame> {
        lines.iter().filter_map(|line| frame(line)).collect()
    }

    fn tally(stacks: &[Vec<Frame>]) -> Tally {
        let mut tally = Tally::new();
        for stack in stacks {
            tally.add(stack);
        }
        tally
    }

    fn phase(name: &str) -> usize {
        PHASES
            .iter()
            .position(|(n, _)| n.starts_with(name))
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn a_frame_keeps_a_symbol_with_spaces_and_parentheses() {
        let frames = stack(&[
            "\t  79d2d1 <pingora_core::protocols::l4::stream::Stream as tokio::io::AsyncWrite>::poll_write (/tmp/xsigate)",
            "\t  c2de9b write (inlined)",
            "\tffffffff82250979 _raw_spin_unlock_irqrestore ([kernel.kallsyms])",
        ]);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[0].symbol,
            "<pingora_core::protocols::l4::stream::Stream as tokio::io::AsyncWrite>::poll_write"
        );
        assert!(!frames[1].kernel);
        assert!(frames[2].kernel);
    }

    #[test]
    fn a_sample_goes_to_the_first_phase_from_the_leaf_up() {
        let parse = stack(&[
            "1 httparse::parse_headers_iter_uninit (/x)",
            "2 pingora_core::protocols::http::v1::client::HttpSession::read_resp_header_parts::{{closure}} (/x)",
            "3 xsigate::http::lean::LeanLane::proxy::{{closure}} (/x)",
        ]);
        let glue = stack(&[
            "1 bytes::bytes::shared_drop (/x)",
            "2 xsigate::http::lean::LeanLane::proxy::{{closure}} (/x)",
            "3 <xsigate::edge::Edge<A,L> as pingora_core::apps::ServerApp>::process_new (/x)",
        ]);
        let tally = tally(&[parse, glue]);
        assert_eq!(tally.samples, 2);
        assert_eq!(tally.phases[phase("Pingora: the answer's head")], 1);
        assert_eq!(tally.phases[phase("lane: glue")], 1);
        assert_eq!(tally.phases[phase("edge: glue")], 0);
    }

    #[test]
    fn kernel_samples_and_foreign_threads_are_counted_apart() {
        let kernel = stack(&[
            "ffffffff1 tcp_sendmsg ([kernel.kallsyms])",
            "2 xsigate::http::lean::LeanLane::proxy::{{closure}} (/x)",
        ]);
        let foreign = stack(&["1 pingora_timeout::timer::TimerManager::clock_thread (/x)"]);
        let tally = tally(&[kernel, foreign, Vec::new()]);
        assert_eq!(tally.samples, 2);
        assert_eq!(tally.kernel, 1);
        assert_eq!(tally.unplaced, 1);
        assert!(tally.phases.iter().all(|n| *n == 0));
    }
}
