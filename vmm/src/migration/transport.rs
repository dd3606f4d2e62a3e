// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! The migration's connection: `tcp:HOST:PORT` or `unix:PATH`, plain, or
//! with a key the logging channel's Noise transport
//! (`ft_backend::channel`: the same handshake, authenticated encryption
//! and record sequencing as the pair's channel), carrying the migration
//! stream as its "log frames".

use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ft_backend::channel::{
    self, ChannelConfig, ChannelKey, ChannelReceiver, ChannelSender, Hello, Incoming, Role,
};

use super::MigrationError;

/// How long either side waits for the other before it gives up on a
/// connection that went quiet.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes buffered before a write reaches the socket.
const WRITE_BUFFER: usize = 1 << 20;

/// Where a migration goes or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationUrl {
    /// `tcp:HOST:PORT` (an address to listen on, for the destination).
    Tcp(String),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl MigrationUrl {
    /// Parses `tcp:HOST:PORT` or `unix:PATH` (upstream's spellings).
    pub fn parse(url: &str) -> Result<Self, MigrationError> {
        let bad = |why: &str| MigrationError::Url {
            url: url.to_string(),
            why: why.to_string(),
        };
        if let Some(rest) = url.strip_prefix("tcp:") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
            if host.is_empty() {
                return Err(bad("no host"));
            }
            port.parse::<u16>()
                .map_err(|_| bad("the port is not a number from 0 to 65535"))?;
            Ok(MigrationUrl::Tcp(rest.to_string()))
        } else if let Some(path) = url.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("no path"));
            }
            Ok(MigrationUrl::Unix(PathBuf::from(path)))
        } else {
            Err(bad("unknown scheme"))
        }
    }

    fn socket_addr(addr: &str) -> Result<SocketAddr, MigrationError> {
        addr.to_socket_addrs()
            .map_err(|source| MigrationError::Resolve {
                addr: addr.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| MigrationError::Resolve {
                addr: addr.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })
    }
}

/// The two directions of an open migration connection.
pub struct Connection {
    /// From the peer.
    pub reader: Box<dyn Read + Send>,
    /// To the peer (buffered: flush before waiting for an answer).
    pub writer: Box<dyn Write + Send>,
    /// Whom we talk to, for logs and errors.
    pub peer: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The Noise channel's settings for a migration: the pair's heartbeats,
/// but a peer is lost only after [`IO_TIMEOUT`] of silence (a destination
/// restoring its VM sends nothing for a moment), and larger buffers.
fn channel_config() -> ChannelConfig {
    ChannelConfig {
        heartbeat: Duration::from_millis(200),
        timeout: IO_TIMEOUT,
        connect_timeout: Duration::from_secs(10),
        window_bytes: 32 << 20,
        recv_buffer_bytes: 64 << 20,
    }
}

fn hello(role: Role) -> Hello {
    // No configuration digest: the destination learns the configuration
    // from the stream.
    Hello::new(role, 0, Vec::new(), 0)
}

fn load_key(key: Option<&Path>) -> Result<Option<ChannelKey>, MigrationError> {
    key.map(|path| {
        ChannelKey::load(path).map_err(|source| MigrationError::Key {
            path: path.to_path_buf(),
            source,
        })
    })
    .transpose()
}

/// Connects to the destination at `url` (the source's side).
pub fn connect(url: &MigrationUrl, key: Option<&Path>) -> Result<Connection, MigrationError> {
    let key = load_key(key)?;
    match (url, key) {
        (MigrationUrl::Tcp(addr), None) => {
            let sa = MigrationUrl::socket_addr(addr)?;
            let stream =
                TcpStream::connect_timeout(&sa, Duration::from_secs(10)).map_err(|source| {
                    MigrationError::Connect {
                        peer: addr.clone(),
                        source,
                    }
                })?;
            let _ = stream.set_nodelay(true);
            plain_tcp(stream, addr.clone())
        }
        (MigrationUrl::Tcp(addr), Some(key)) => {
            let sa = MigrationUrl::socket_addr(addr)?;
            let ch = channel::connect(sa, &key, &hello(Role::Primary), &channel_config()).map_err(
                |source| MigrationError::Handshake {
                    peer: addr.clone(),
                    source,
                },
            )?;
            Ok(noise(ch.sender, ch.receiver, addr.clone()))
        }
        (MigrationUrl::Unix(path), None) => {
            let stream = UnixStream::connect(path).map_err(|source| MigrationError::Connect {
                peer: path.display().to_string(),
                source,
            })?;
            plain_unix(stream, path.display().to_string())
        }
        (MigrationUrl::Unix(_), Some(_)) => Err(MigrationError::KeyNeedsTcp),
    }
}

/// Where a destination waits for its source.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener, String),
    /// A unix socket (removed when dropped).
    Unix(UnixListener, PathBuf),
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds `url` (the destination's side). A stale unix socket file is
/// replaced, as upstream does.
pub fn listen(url: &MigrationUrl, key: Option<&Path>) -> Result<Listener, MigrationError> {
    if key.is_some() && matches!(url, MigrationUrl::Unix(_)) {
        return Err(MigrationError::KeyNeedsTcp);
    }
    match url {
        MigrationUrl::Tcp(addr) => {
            let sa = MigrationUrl::socket_addr(addr)?;
            let l = TcpListener::bind(sa).map_err(|source| MigrationError::Listen {
                url: format!("tcp:{addr}"),
                source,
            })?;
            Ok(Listener::Tcp(l, addr.clone()))
        }
        MigrationUrl::Unix(path) => {
            let _ = std::fs::remove_file(path);
            let l = UnixListener::bind(path).map_err(|source| MigrationError::Listen {
                url: format!("unix:{}", path.display()),
                source,
            })?;
            Ok(Listener::Unix(l, path.clone()))
        }
    }
}

/// Accepts the source's connection on `listener` (with `key`, the Noise
/// handshake: a source without the key is refused here).
pub fn accept(listener: &Listener, key: Option<&Path>) -> Result<Connection, MigrationError> {
    let key = load_key(key)?;
    match (listener, key) {
        (Listener::Tcp(l, addr), Some(key)) => {
            let ch = channel::accept(l, &key, &hello(Role::Backup), &channel_config()).map_err(
                |source| MigrationError::Handshake {
                    peer: addr.clone(),
                    source,
                },
            )?;
            let peer = ch.peer_addr.to_string();
            Ok(noise(ch.sender, ch.receiver, peer))
        }
        (Listener::Tcp(l, _), None) => {
            let (stream, peer) = l.accept().map_err(MigrationError::Accept)?;
            let _ = stream.set_nodelay(true);
            plain_tcp(stream, peer.to_string())
        }
        (Listener::Unix(l, path), _) => {
            let (stream, _) = l.accept().map_err(MigrationError::Accept)?;
            plain_unix(stream, path.display().to_string())
        }
    }
}

fn plain_tcp(stream: TcpStream, peer: String) -> Result<Connection, MigrationError> {
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(MigrationError::Accept)?;
    let reader = stream.try_clone().map_err(MigrationError::Accept)?;
    Ok(Connection {
        reader: Box::new(reader),
        writer: Box::new(BufWriter::with_capacity(WRITE_BUFFER, stream)),
        peer,
    })
}

fn plain_unix(stream: UnixStream, peer: String) -> Result<Connection, MigrationError> {
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(MigrationError::Accept)?;
    let reader = stream.try_clone().map_err(MigrationError::Accept)?;
    Ok(Connection {
        reader: Box::new(reader),
        writer: Box::new(BufWriter::with_capacity(WRITE_BUFFER, stream)),
        peer,
    })
}

fn noise(sender: ChannelSender, receiver: ChannelReceiver, peer: String) -> Connection {
    Connection {
        reader: Box::new(NoiseReader {
            receiver,
            buf: Vec::new(),
            at: 0,
        }),
        writer: Box::new(NoiseWriter {
            sender: Some(sender),
            buf: Vec::with_capacity(WRITE_BUFFER),
        }),
        peer,
    }
}

/// The migration stream read from the channel's log frames.
struct NoiseReader {
    receiver: ChannelReceiver,
    buf: Vec<u8>,
    at: usize,
}

impl Read for NoiseReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            match self.receiver.recv() {
                Ok(Incoming::LogFrames(b)) => {
                    self.buf = b;
                    self.at = 0;
                }
                Ok(Incoming::Progress(_)) => {}
                Err(channel::SessionError::Closed | channel::SessionError::Goodbye) => {
                    return Ok(0)
                }
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The migration stream written as the channel's log frames.
struct NoiseWriter {
    sender: Option<ChannelSender>,
    buf: Vec<u8>,
}

impl NoiseWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        sender
            .send_frames(&self.buf)
            .map_err(std::io::Error::other)?;
        self.buf.clear();
        Ok(())
    }
}

impl Write for NoiseWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUFFER {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for NoiseWriter {
    fn drop(&mut self) {
        let _ = self.send();
        if let Some(s) = self.sender.take() {
            // A goodbye: the peer sees a clean end, not a lost channel.
            let _ = s.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            MigrationUrl::parse("tcp:127.0.0.1:6000").unwrap(),
            MigrationUrl::Tcp("127.0.0.1:6000".into())
        );
        assert_eq!(
            MigrationUrl::parse("tcp:[::1]:6000").unwrap(),
            MigrationUrl::Tcp("[::1]:6000".into())
        );
        assert_eq!(
            MigrationUrl::parse("unix:/tmp/m.sock").unwrap(),
            MigrationUrl::Unix("/tmp/m.sock".into())
        );
        for bad in [
            "",
            "tcp:",
            "tcp:host",
            "tcp::1",
            "tcp:h:99999",
            "tcp:h:x",
            "unix:",
            "file:///x",
            "127.0.0.1:6000",
        ] {
            let e = MigrationUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
