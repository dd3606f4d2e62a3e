//! `workload=kv ip=A.B.C.D/P [gw=A.B.C.D]`: a TCP key-value service on
//! port 7000 (protocol: the library's `kvproto`), built on smoltcp over
//! the virtio-net driver, keeping its data in a log on the virtio disk
//! ([`store`]).
//!
//! One event loop serves every connection: it polls the TCP/IP stack,
//! reads complete lines from each connection, answers GETs at once and
//! gathers the SETs of all connections into one group, which is written
//! and flushed to the disk together (group commit: two disk requests for
//! the whole group) before each of them is answered `OK`. A connection
//! with a SET in flight reads no further line until it is answered, so
//! answers keep the order of requests. With nothing to do the loop
//! sleeps until an interrupt (a frame, or the 100 Hz timer tick that
//! drives TCP's timers).

mod random;
mod store;

use alloc::vec::Vec;

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use test_guest::kvproto::{self, Request, MAX_LINE};
use thiserror::Error;

use super::{start_timer, ticks, WorkloadError};
use crate::arch;
use crate::pci::Access;
use crate::println;
use crate::virtio::blk::Blk;
use crate::virtio::net::Net;
use store::{Store, MAX_GROUP};

/// The service's TCP port.
pub const PORT: u16 = 7000;
/// IDT vectors of the disk queue and the network queues.
const BLK_VECTOR: u8 = 0x40;
const NET_RX_VECTOR: u8 = 0x41;
const NET_TX_VECTOR: u8 = 0x42;
/// Timer rate (TCP timers have this resolution).
const HZ: u64 = 100;
/// Connections served at once, and idle listening sockets kept ready for
/// bursts of new connections.
const MAX_CONNECTIONS: usize = 256;
const LISTENERS: usize = 16;
/// Socket buffer sizes.
const SOCKET_BUFFER: usize = 8192;
/// A connection stops reading while this much output waits.
const OUTPUT_HIGH_WATER: usize = 8192;

/// The service could not start.
#[derive(Debug, Error)]
pub enum KvError {
    /// The network device.
    #[error("network device")]
    Net(#[source] crate::virtio::net::NetError),
    /// The disk device.
    #[error("disk device")]
    Disk(#[source] crate::virtio::blk::BlkError),
    /// The log on the disk.
    #[error("log")]
    Store(#[source] store::StoreError),
    /// smoltcp refused a listening socket.
    #[error("cannot listen on port {PORT}")]
    Listen,
}

/// One TCP connection (or a socket still listening for one).
#[derive(Debug)]
struct Connection {
    handle: SocketHandle,
    /// Bytes received, not yet a complete line.
    input: Vec<u8>,
    /// Answers not yet taken by the socket.
    output: Vec<u8>,
    /// The rest of an over-long line is being dropped.
    discarding: bool,
    /// A SET of this connection waits for the group commit.
    pending: bool,
    /// The socket has left the listening state.
    accepted: bool,
}

/// Runs the service (returns only when it cannot start).
pub fn run(ip: [u8; 4], prefix: u8, gateway: Option<[u8; 4]>) -> Result<(), WorkloadError> {
    serve(ip, prefix, gateway).map_err(WorkloadError::Kv)
}

fn now() -> Instant {
    Instant::from_millis((ticks() * (1000 / HZ)) as i64)
}

fn serve(ip: [u8; 4], prefix: u8, gateway: Option<[u8; 4]>) -> Result<(), KvError> {
    let timer = start_timer(HZ);
    if let Err(e) = timer {
        println!("kv: error: {}", test_guest::config::ErrorChain(&e));
    }
    let access = Access::detect();
    println!("kv: PCI configuration through {access}");
    let blk = Blk::open(&access, BLK_VECTOR).map_err(KvError::Disk)?;
    let (mut store, report) = Store::open(blk).map_err(KvError::Store)?;
    if report.formatted {
        println!("kv: formatted the disk");
    }
    println!(
        "kv: log replayed: {} records, {} corrupt skipped, {} keys",
        report.records,
        report.corrupt,
        store.len()
    );
    let mut net = Net::open(&access, NET_RX_VECTOR, NET_TX_VECTOR).map_err(KvError::Net)?;
    let mac = net.mac();
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    // A fixed seed: the guest has no entropy source it may use (and the
    // VMM must be able to replay it).
    config.random_seed =
        u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], ip[2], ip[3]]);
    let mut iface = Interface::new(config, &mut net, now());
    let address = Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]);
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(address), prefix));
    });
    if let Some(gw) = gateway {
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(gw[0], gw[1], gw[2], gw[3]));
    }
    let mut sockets = SocketSet::new(Vec::new());
    let mut connections: Vec<Connection> = Vec::new();
    ensure_listeners(&mut sockets, &mut connections)?;
    println!(
        "kv: listening on {}.{}.{}.{}:{PORT} (mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x})",
        ip[0], ip[1], ip[2], ip[3], mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    );

    let mut group: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let mut progress =
            iface.poll(now(), &mut net, &mut sockets) == PollResult::SocketStateChanged;
        for (index, connection) in connections.iter_mut().enumerate() {
            let socket = sockets.get_mut::<tcp::Socket>(connection.handle);
            if !connection.accepted && socket.is_active() {
                connection.accepted = true;
                socket.set_nagle_enabled(false);
            }
            progress |= receive(connection, socket);
            progress |= handle_lines(index, connection, &store, &mut group);
        }
        if !group.is_empty() {
            progress = true;
            // SETs that would overfill the table's memory are refused here.
            let mut reserved = 0;
            group.retain(|(index, key, value)| {
                if store.admit(key, value, &mut reserved) {
                    return true;
                }
                if let Some(connection) = connections.get_mut(*index) {
                    connection.pending = false;
                    connection
                        .output
                        .extend_from_slice(b"ERR the table is full\n");
                }
                false
            });
            for batch in group.chunks(MAX_GROUP) {
                let records: Vec<(Vec<u8>, Vec<u8>)> = batch
                    .iter()
                    .map(|(_, k, v)| (k.clone(), v.clone()))
                    .collect();
                let result = store.commit(&records);
                if let Err(e) = &result {
                    println!("kv: write failed: {}", test_guest::config::ErrorChain(e));
                }
                for (index, _, _) in batch {
                    if let Some(connection) = connections.get_mut(*index) {
                        connection.pending = false;
                        match &result {
                            Ok(()) => connection.output.extend_from_slice(b"OK\n"),
                            Err(e) => {
                                connection.output.extend_from_slice(b"ERR ");
                                write_error(&mut connection.output, e);
                                connection.output.push(b'\n');
                            }
                        }
                    }
                }
            }
            group.clear();
            // Answered connections may hold further complete lines.
            for (index, connection) in connections.iter_mut().enumerate() {
                handle_lines(index, connection, &store, &mut group);
            }
            if !group.is_empty() {
                continue;
            }
        }
        for connection in connections.iter_mut() {
            let socket = sockets.get_mut::<tcp::Socket>(connection.handle);
            progress |= send(connection, socket);
        }
        // Forget closed connections; keep listeners ready.
        let before = connections.len();
        connections.retain(|c| {
            let closed =
                c.accepted && sockets.get::<tcp::Socket>(c.handle).state() == tcp::State::Closed;
            if closed {
                sockets.remove(c.handle);
            }
            !closed
        });
        progress |= connections.len() != before;
        ensure_listeners(&mut sockets, &mut connections)?;
        progress |= iface.poll(now(), &mut net, &mut sockets) == PollResult::SocketStateChanged;
        net.flush();
        if !progress {
            arch::disable_interrupts();
            if net.rx_pending() {
                arch::enable_interrupts();
            } else {
                arch::wait_for_interrupt();
            }
        }
    }
}

/// Keeps [`LISTENERS`] sockets listening (within [`MAX_CONNECTIONS`]).
fn ensure_listeners(
    sockets: &mut SocketSet<'_>,
    connections: &mut Vec<Connection>,
) -> Result<(), KvError> {
    let listening = connections.iter().filter(|c| !c.accepted).count();
    for _ in listening..LISTENERS {
        if connections.len() >= MAX_CONNECTIONS + LISTENERS {
            break;
        }
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(alloc::vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(alloc::vec![0; SOCKET_BUFFER]),
        );
        socket.listen(PORT).map_err(|_| KvError::Listen)?;
        connections.push(Connection {
            handle: sockets.add(socket),
            input: Vec::new(),
            output: Vec::new(),
            discarding: false,
            pending: false,
            accepted: false,
        });
    }
    Ok(())
}

/// Moves received bytes into the connection's input, unless it has a SET
/// in flight or too much output waiting. Closes the socket once the peer
/// has closed and everything is answered.
fn receive(connection: &mut Connection, socket: &mut tcp::Socket<'_>) -> bool {
    let mut progress = false;
    if !connection.pending && connection.output.len() < OUTPUT_HIGH_WATER && socket.can_recv() {
        let room = (MAX_LINE + 2).saturating_sub(connection.input.len()).max(1);
        if let Ok(n) = socket.recv(|data| {
            let n = data.len().min(room);
            connection.input.extend_from_slice(&data[..n]);
            (n, n)
        }) {
            progress |= n > 0;
        }
    }
    let idle =
        !connection.pending && connection.output.is_empty() && !connection.input.contains(&b'\n');
    if connection.accepted
        && !socket.may_recv()
        && socket.may_send()
        && idle
        && socket.send_queue() == 0
    {
        // The peer closed its side and has every answer: close ours.
        socket.close();
        progress = true;
    }
    progress
}

/// Answers the complete lines in the connection's input, until a SET
/// must wait for the disk. Returns whether anything was done.
fn handle_lines(
    index: usize,
    connection: &mut Connection,
    store: &Store,
    group: &mut Vec<(usize, Vec<u8>, Vec<u8>)>,
) -> bool {
    let mut progress = false;
    while !connection.pending {
        let Some(end) = connection.input.iter().position(|&b| b == b'\n') else {
            if connection.input.len() > MAX_LINE + 1 {
                if !connection.discarding {
                    connection.output.extend_from_slice(b"ERR line too long\n");
                }
                connection.discarding = true;
                connection.input.clear();
                progress = true;
            }
            break;
        };
        progress = true;
        let line: Vec<u8> = connection.input.drain(..=end).collect();
        if connection.discarding {
            // The end of an over-long line already answered.
            connection.discarding = false;
            continue;
        }
        let line = &line[..line.len() - 1];
        match kvproto::parse(line) {
            Ok(Request::Get { key }) => match store.get(key) {
                Some(value) => {
                    connection.output.extend_from_slice(b"VALUE ");
                    connection.output.extend_from_slice(value);
                    connection.output.push(b'\n');
                }
                None => connection.output.extend_from_slice(b"NONE\n"),
            },
            Ok(Request::Random) => {
                let value = random::draw();
                connection.output.extend_from_slice(b"RANDOM ");
                random::hex(&mut connection.output, value);
                connection.output.push(b'\n');
            }
            Ok(Request::Set { key, value }) => {
                group.push((index, key.to_vec(), value.to_vec()));
                connection.pending = true;
            }
            Err(e) => {
                connection.output.extend_from_slice(b"ERR ");
                write_error(&mut connection.output, &e);
                connection.output.push(b'\n');
            }
        }
    }
    progress
}

/// Hands waiting answers to the socket.
fn send(connection: &mut Connection, socket: &mut tcp::Socket<'_>) -> bool {
    if connection.output.is_empty() || !socket.can_send() {
        return false;
    }
    match socket.send_slice(&connection.output) {
        Ok(n) if n > 0 => {
            connection.output.drain(..n);
            true
        }
        _ => false,
    }
}

/// Appends an error and its causes, on one line.
fn write_error(out: &mut Vec<u8>, error: &dyn core::error::Error) {
    struct Sink<'a>(&'a mut Vec<u8>);
    impl core::fmt::Write for Sink<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.0.extend(s.bytes().filter(|&b| b != b'\n'));
            Ok(())
        }
    }
    let _ = core::fmt::write(
        &mut Sink(out),
        format_args!("{}", test_guest::config::ErrorChain(error)),
    );
}
