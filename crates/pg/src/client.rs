//! A simulated routing client: numbers its route requests and remembers which were answered.

use tandem_model::{PeripheralId, RouteRequestKey, RoutingClientId};

/// The PG incarnation a simulator's requests carry unless told another
/// (`LoadParams::pg_incarnation`); request ids count up from 1 within an incarnation.
pub const PG_INCARNATION: u32 = 1;

/// One routing client of a simulated PG.
pub(crate) struct Client {
    pub(crate) id: RoutingClientId,
    /// The peripheral where post-routed calls of this client arrive: the first peripheral of
    /// the client's PG in configuration order.
    pub(crate) peripheral: PeripheralId,
    /// The client's own answer timeout.
    pub(crate) timeout_ms: u64,
    /// The incarnation its keys carry: a restarted PG numbers its requests from 1 again.
    pg_incarnation: u32,
    /// The highest request id issued so far (ids start at 1).
    requests_issued: u64,
    /// One bit per issued request id, set once the request was answered. A bit per request
    /// (4.5 MB for an hour at 10,000 calls/s) is the price of catching a duplicate answer
    /// however late it comes.
    answered: Vec<u64>,
}

/// What the simulator knows of a route request key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyOrigin {
    /// This client issued it.
    Issued,
    /// Another incarnation, or an id never issued.
    Unknown,
}

impl Client {
    pub(crate) fn new(
        id: RoutingClientId,
        peripheral: PeripheralId,
        timeout_ms: u64,
        pg_incarnation: u32,
    ) -> Client {
        Client {
            id,
            peripheral,
            timeout_ms,
            pg_incarnation,
            requests_issued: 0,
            answered: Vec::new(),
        }
    }

    /// The key of the next request.
    pub(crate) fn next_key(&mut self) -> RouteRequestKey {
        self.requests_issued += 1;
        RouteRequestKey {
            routing_client: self.id,
            pg_incarnation: self.pg_incarnation,
            request_id: self.requests_issued,
        }
    }

    pub(crate) fn origin(&self, key: &RouteRequestKey) -> KeyOrigin {
        let issued = key.routing_client == self.id
            && key.pg_incarnation == self.pg_incarnation
            && (1..=self.requests_issued).contains(&key.request_id);
        if issued {
            KeyOrigin::Issued
        } else {
            KeyOrigin::Unknown
        }
    }

    /// Records an answer for an issued key; true when it is the first.
    pub(crate) fn mark_answered(&mut self, key: &RouteRequestKey) -> bool {
        assert_eq!(self.origin(key), KeyOrigin::Issued, "answer for {key:?}");
        let bit = key.request_id - 1;
        let word = usize::try_from(bit / 64).expect("request ids fit in memory");
        if self.answered.len() <= word {
            self.answered.resize(word + 1, 0);
        }
        let mask = 1u64 << (bit % 64);
        let first = self.answered[word] & mask == 0;
        self.answered[word] |= mask;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_count_up_from_one_and_answers_are_remembered() {
        let mut client = Client::new(
            RoutingClientId(4),
            PeripheralId(5000),
            5_000,
            PG_INCARNATION,
        );
        let first = client.next_key();
        assert_eq!(first.request_id, 1);
        assert_eq!(first.pg_incarnation, PG_INCARNATION);
        let keys: Vec<_> = (0..200).map(|_| client.next_key()).collect();
        assert_eq!(client.origin(&first), KeyOrigin::Issued);
        let never = RouteRequestKey {
            request_id: 202,
            ..first
        };
        assert_eq!(client.origin(&never), KeyOrigin::Unknown);
        let other_incarnation = RouteRequestKey {
            pg_incarnation: 2,
            ..first
        };
        assert_eq!(client.origin(&other_incarnation), KeyOrigin::Unknown);
        assert!(client.mark_answered(&keys[130]));
        assert!(!client.mark_answered(&keys[130]));
        assert!(client.mark_answered(&keys[129]));
        assert!(client.mark_answered(&first));
        assert!(!client.mark_answered(&first));
    }
}
