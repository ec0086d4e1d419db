//! The replay sandbox's DNS (DESIGN §7 step 3): every name the app looks up resolves, to
//! an address of its own from 198.18.0.0/15 (RFC 2544's benchmarking range, never routed
//! on the Internet), so the app connects as it would in production and the connection —
//! redirected to the outbound stub — can be mapped back to the name it was for. Nothing is
//! ever asked of a real resolver. Messages are read and written with `hickory-proto`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The first address handed out, and how many there are (198.18.0.1 – 198.19.255.254).
const FIRST: u32 = u32::from_be_bytes([198, 18, 0, 1]);
const COUNT: u32 = (1 << 17) - 2;

/// Names looked up during the run and the addresses they were given.
#[derive(Debug, Default)]
pub struct Names {
    by_name: HashMap<String, Ipv4Addr>,
    by_address: HashMap<Ipv4Addr, String>,
}

impl Names {
    /// The address for `name` (lower case, without the trailing dot), given on first use.
    pub fn address(&mut self, name: &str) -> Ipv4Addr {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(a) = self.by_name.get(&name) {
            return *a;
        }
        // The range is large; a run that somehow uses all of it starts again from the
        // first address (its older names then map to newer ones).
        let n = self.by_name.len() as u32 % COUNT;
        let address = Ipv4Addr::from(FIRST + n);
        self.by_name.insert(name.clone(), address);
        self.by_address.insert(address, name);
        address
    }

    /// The name an address was given to.
    pub fn name(&self, address: Ipv4Addr) -> Option<&str> {
        self.by_address.get(&address).map(String::as_str)
    }
}

/// The names, shared by the DNS server and the outbound stub.
pub type SharedNames = Arc<Mutex<Names>>;

/// The answer to one query message: A records from `names`, an empty answer for any other
/// type (so a client asking for AAAA falls back to the A record), FORMERR for what does
/// not parse as a query. `None`: not worth an answer (a response, or undecodable bytes).
pub fn answer(query: &[u8], names: &SharedNames) -> Option<Vec<u8>> {
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            // The id is the first two bytes, when there are two: a FORMERR for it.
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata = Metadata::response_from_request(&request.metadata);
    response.metadata.authoritative = true;
    response.metadata.recursion_available = true;
    for q in &request.queries {
        response.add_query(q.clone());
        if q.query_type() == RecordType::A {
            let address = names
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .address(&q.name().to_ascii());
            response.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A(address)),
            ));
        }
    }
    if request.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
    }
    response.to_vec().ok()
}

/// Answers queries on `socket` until `shutdown`.
pub async fn serve(socket: UdpSocket, names: SharedNames, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "replay DNS: receive failed");
                    continue;
                }
            },
        };
        let Some(reply) = buf.get(..n).and_then(|q| answer(q, &names)) else {
            continue;
        };
        if let Err(e) = socket.send_to(&reply, from).await {
            tracing::debug!(error = %e, "replay DNS: send failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).expect("name"), kind));
        m.to_vec().expect("encode")
    }

    #[test]
    fn every_name_resolves_to_its_own_address_and_maps_back() {
        let names: SharedNames = Arc::default();
        let a = Message::from_vec(
            &answer(&query("fraud.example.com.", RecordType::A), &names).expect("answer"),
        )
        .expect("decode");
        assert_eq!(a.metadata.id, 7);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        let RData::A(A(first)) = a.answers[0].data.clone() else {
            panic!("not an A record: {:?}", a.answers)
        };
        assert_eq!(first, Ipv4Addr::new(198, 18, 0, 1));
        let again = Message::from_vec(
            &answer(&query("FRAUD.example.com", RecordType::A), &names).expect("answer"),
        )
        .expect("decode");
        assert_eq!(
            &again.answers[0].data,
            &RData::A(A(first)),
            "same name, same address"
        );
        let other = Message::from_vec(
            &answer(&query("mail.example.com", RecordType::A), &names).expect("answer"),
        )
        .expect("decode");
        assert_eq!(
            &other.answers[0].data,
            &RData::A(A(Ipv4Addr::new(198, 18, 0, 2)))
        );
        let names = names.lock().expect("lock");
        assert_eq!(names.name(first), Some("fraud.example.com"));
        assert_eq!(
            names.name(Ipv4Addr::new(198, 18, 0, 2)),
            Some("mail.example.com")
        );
        assert_eq!(names.name(Ipv4Addr::new(10, 0, 0, 1)), None);
    }

    #[test]
    fn other_types_get_an_empty_answer_and_garbage_a_formerr() {
        let names: SharedNames = Arc::default();
        let aaaa = Message::from_vec(
            &answer(&query("example.com", RecordType::AAAA), &names).expect("answer"),
        )
        .expect("decode");
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        let bad = Message::from_vec(&answer(&[0x12, 0x34, 0xff], &names).expect("answer"))
            .expect("decode");
        assert_eq!(
            (bad.metadata.id, bad.metadata.response_code),
            (0x1234, ResponseCode::FormErr)
        );
        assert_eq!(answer(&[0x12], &names), None);
    }
}
