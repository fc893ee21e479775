//! The cluster DNS stand-in for tests/container_e2e.rs.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The cluster DNS stand-in: a tiny DNS server on a loopback address (port 53, as resolv.conf
/// cannot name another) that answers A queries for `vault.<namespace>.svc.cluster.local` with
/// 127.0.0.1, AAAA with no records, anything else with NXDOMAIN. It records every name asked
/// for, so the test can see the resolver expanded a short name with the search domains.
pub struct ClusterDns {
    ip: std::net::Ipv4Addr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub const CLUSTER_DOMAIN: &str = "e2e.svc.cluster.local";

impl ClusterDns {
    pub fn start() -> ClusterDns {
        // 127.53.x.y: out of the way of a local resolver on 127.0.0.53; retried on a clash.
        let socket = (0..20)
            .find_map(|i| {
                let ip = std::net::Ipv4Addr::new(127, 53, (std::process::id() % 250) as u8, 1 + i);
                UdpSocket::bind((ip, 53)).ok()
            })
            .expect("bind UDP port 53 on a 127.53.x.y address");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("socket timeout");
        let ip = match socket.local_addr().expect("local addr").ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("unexpected address {other}"),
        };
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some((name, reply)) = dns_answer(&buf[..n]) {
                    a.lock().expect("dns log").push(name);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        ClusterDns {
            ip,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// A resolv.conf as kubelet writes one for a pod in namespace `e2e`.
    pub fn resolv_conf(&self) -> String {
        format!(
            "nameserver {}\nsearch {CLUSTER_DOMAIN} svc.cluster.local cluster.local\noptions ndots:5\n",
            self.ip
        )
    }

    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("dns log").clone()
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The queried name and the reply to one DNS query (RFC 1035), or None for a packet that is
/// not a plain one-question query.
fn dns_answer(q: &[u8]) -> Option<(String, Vec<u8>)> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let known = name == format!("vault.{CLUSTER_DOMAIN}");
    let answer_a = known && qtype == 1;
    let mut r = q.get(..question_end)?.to_vec();
    r[2] = 0x84 | (q[2] & 0x01); // response, authoritative, recursion desired copied
    r[3] = 0x80 | if known { 0 } else { 3 }; // recursion available; NOERROR or NXDOMAIN
    r[6..12].copy_from_slice(&[0, u8::from(answer_a), 0, 0, 0, 0]);
    if answer_a {
        // Name pointer to the question, type A, class IN, TTL 5 s, 4 bytes: 127.0.0.1.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some((name, r))
}
