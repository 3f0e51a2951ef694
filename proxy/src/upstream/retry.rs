//! Whether a request that failed at one upstream is sent again, and where: one rule for proxied
//! requests ([`crate::http`]) and for the requests the gateway sends itself
//! ([`super::xsi`]).
//!
//! A request that never reached an upstream may go anywhere. One that reached it may have had
//! effects, so it is sent again only when it is idempotent (RFC 9110 §9.2.2) and no answer
//! began: the upstream may have died with it in flight, or a pooled connection gone stale. A
//! long-lived stream (an XSI-Events channel) is never sent twice, and a pinned request (a
//! channel command, which only its XSP can answer) never moves to another upstream.

/// What is known of the request when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Idempotent, and its body still held for a resend.
    pub idempotent: bool,
    /// Bound to one upstream: the client's pin, or a target with one upstream only.
    pub pinned: bool,
    /// A long-lived response stream.
    pub stream: bool,
    /// Some upstream of the pool was not tried yet for this request.
    pub untried_left: bool,
}

/// How it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing reached the upstream: refused, unreachable, TLS failed.
    NotConnected,
    /// The request was sent and no answer began. `stale_connection`: it went out on a pooled
    /// connection that turned out closed, which says nothing about the upstream.
    NoAnswer { stale_connection: bool },
    /// An answer began; a second one cannot be given.
    AnswerStarted,
    /// The request's own time ran out.
    TimedOut,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Send it to another upstream of the pool.
    Another,
    /// Send it again to the same upstream (a new connection).
    Same,
    /// Fail the request.
    GiveUp,
}

pub fn next(attempt: Attempt, failure: Failure) -> Next {
    let elsewhere = if !attempt.pinned && attempt.untried_left {
        Next::Another
    } else {
        Next::GiveUp
    };
    match failure {
        Failure::NotConnected => elsewhere,
        Failure::AnswerStarted | Failure::TimedOut => Next::GiveUp,
        Failure::NoAnswer { .. } if !attempt.idempotent || attempt.stream => Next::GiveUp,
        Failure::NoAnswer {
            stale_connection: true,
        } => Next::Same,
        Failure::NoAnswer {
            stale_connection: false,
        } => elsewhere,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Attempt = Attempt {
        idempotent: true,
        pinned: false,
        stream: false,
        untried_left: true,
    };
    const NO_ANSWER: Failure = Failure::NoAnswer {
        stale_connection: false,
    };
    const STALE: Failure = Failure::NoAnswer {
        stale_connection: true,
    };

    #[test]
    fn what_never_reached_an_upstream_goes_to_another_unless_pinned_or_none_is_left() {
        let post = Attempt {
            idempotent: false,
            ..GET
        };
        assert_eq!(next(post, Failure::NotConnected), Next::Another);
        let pinned = Attempt {
            pinned: true,
            ..post
        };
        assert_eq!(next(pinned, Failure::NotConnected), Next::GiveUp);
        let last = Attempt {
            untried_left: false,
            ..post
        };
        assert_eq!(next(last, Failure::NotConnected), Next::GiveUp);
    }

    #[test]
    fn a_request_that_may_have_had_effects_is_never_sent_twice() {
        let post = Attempt {
            idempotent: false,
            ..GET
        };
        assert_eq!(next(post, NO_ANSWER), Next::GiveUp);
        assert_eq!(next(post, STALE), Next::GiveUp);
        let stream = Attempt {
            stream: true,
            ..GET
        };
        assert_eq!(next(stream, NO_ANSWER), Next::GiveUp);
        assert_eq!(next(stream, STALE), Next::GiveUp);
    }

    #[test]
    fn an_idempotent_request_without_an_answer_is_sent_again() {
        assert_eq!(next(GET, NO_ANSWER), Next::Another);
        assert_eq!(next(GET, STALE), Next::Same);
        let pinned = Attempt {
            pinned: true,
            ..GET
        };
        assert_eq!(next(pinned, NO_ANSWER), Next::GiveUp);
        assert_eq!(
            next(pinned, STALE),
            Next::Same,
            "a new connection, same XSP"
        );
        let last = Attempt {
            untried_left: false,
            ..GET
        };
        assert_eq!(next(last, NO_ANSWER), Next::GiveUp);
    }

    #[test]
    fn an_answer_begun_or_a_deadline_passed_ends_it() {
        assert_eq!(next(GET, Failure::AnswerStarted), Next::GiveUp);
        assert_eq!(next(GET, Failure::TimedOut), Next::GiveUp);
    }
}
