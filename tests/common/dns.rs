//! A DNS server for the tests (UDP on 127.0.0.1, a thread of its own):
//! SRV records as given, and every A question answered 127.0.0.1, so that
//! `--discovery-srv` runs against real DNS traffic. kvd reaches it through
//! `KVD_DNS_SERVER`.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub struct Dns {
    pub addr: SocketAddr,
}

/// Starts a server answering `srv`: (service name, [(target, port)]), e.g.
/// `("_etcd-server._tcp.kvd.test.", [("m1.kvd.test.", 2380)])`.
pub fn start(srv: Vec<(String, Vec<(String, u16)>)>) -> Dns {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the test DNS server");
    let addr = socket.local_addr().expect("DNS address");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = Message::new();
            answer
                .set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(query.op_code())
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true)
                .set_authoritative(true);
            let mut found = false;
            for q in query.queries() {
                answer.add_query(q.clone());
                let name = q.name().to_ascii().to_ascii_lowercase();
                match q.query_type() {
                    RecordType::SRV => {
                        for (service, targets) in &srv {
                            if service.to_ascii_lowercase() != name {
                                continue;
                            }
                            for (target, port) in targets {
                                let target = Name::from_ascii(target).expect("SRV target");
                                answer.add_answer(Record::from_rdata(
                                    q.name().clone(),
                                    5,
                                    RData::SRV(SRV::new(0, 0, *port, target)),
                                ));
                                found = true;
                            }
                        }
                    }
                    RecordType::A => {
                        answer.add_answer(Record::from_rdata(
                            q.name().clone(),
                            5,
                            RData::A(A(Ipv4Addr::LOCALHOST)),
                        ));
                        found = true;
                    }
                    _ => {}
                }
            }
            if !found {
                answer.set_response_code(ResponseCode::NXDomain);
            }
            if let Ok(bytes) = answer.to_vec() {
                let _ = socket.send_to(&bytes, from);
            }
        }
    });
    Dns { addr }
}
