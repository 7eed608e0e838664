//! An AF_PACKET socket with a TPACKET_V3 receive ring, bound to one
//! interface. The only `unsafe` code of the sensor is here: the socket
//! calls, the ring's `mmap`, and reading the ring's headers, every offset
//! the kernel writes checked against the block before a slice is made.
//!
//! The socket is opened with protocol 0 (it receives nothing), the ring
//! and the filter are set up, and only then is it bound to the interface
//! with `ETH_P_ALL`: no packet of another interface, and none the filter
//! would refuse, ever enters the ring.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// `tpacket3_hdr.tp_status`: the frame was cut to the snap length.
const TP_STATUS_COPY: u32 = 1 << 1;

/// The ring's shape.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Bytes per block (a power of two, a multiple of the page size).
    pub block_size: u32,
    /// Blocks in the ring.
    pub blocks: u32,
    /// How long the kernel fills a block before handing it over anyway
    /// (ms): the latency bound on a quiet link.
    pub retire_ms: u32,
    /// Put the interface into promiscuous mode while the socket is open.
    pub promiscuous: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 1 << 20,
            blocks: 64,
            retire_ms: 20,
            promiscuous: false,
        }
    }
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BpfInsn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const BpfInsn,
}

#[repr(C)]
struct TpacketReq3 {
    block_size: libc::c_uint,
    block_nr: libc::c_uint,
    frame_size: libc::c_uint,
    frame_nr: libc::c_uint,
    retire_blk_tov: libc::c_uint,
    sizeof_priv: libc::c_uint,
    feature_req_word: libc::c_uint,
}

#[repr(C)]
#[derive(Default)]
struct TpacketStatsV3 {
    packets: libc::c_uint,
    drops: libc::c_uint,
    freeze_q_cnt: libc::c_uint,
}

#[repr(C)]
struct PacketMreq {
    ifindex: libc::c_int,
    kind: libc::c_ushort,
    alen: libc::c_ushort,
    address: [libc::c_uchar; 8],
}

/// The kernel's counts for the socket since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the socket received (delivered to the ring or dropped).
    pub packets: u64,
    /// Packets dropped because the ring was full.
    pub drops: u64,
    /// Times the ring's queue froze (every block in user hands).
    pub freezes: u64,
}

/// A captured frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Capture time, ns since the Unix epoch (the kernel's clock).
    pub ts_ns: u64,
    /// The frame from its link-layer header on, as captured.
    pub data: &'a [u8],
    /// Its length on the wire (more than `data` when it was cut).
    pub wire_len: u32,
}

/// What one read of a block found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockRead {
    /// Frames handed to the callback.
    pub frames: u64,
    /// Frames cut to the ring's frame size (handed over cut).
    pub cut: u64,
    /// Frame headers the kernel wrote that did not fit the block (never
    /// expected; counted, the rest of the block skipped).
    pub bad_headers: u64,
}

/// The capture socket and its ring.
pub struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    len: usize,
    block_size: usize,
    blocks: usize,
    next: usize,
    stats: KernelStats,
}

// The mapping is owned by the ring alone and only touched through &mut.
unsafe impl Send for Ring {}

fn last_error(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
    what: &str,
) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(last_error(what));
    }
    Ok(())
}

/// The index of interface `iface`.
pub fn ifindex(iface: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(iface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "an interface name has no NUL"))?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {iface:?} (ip link lists them)"),
        ));
    }
    Ok(i)
}

/// The index of interface `iface` in the network namespace at `netns`
/// (this process's when `None`): whether a sensor has something to open.
pub fn ifindex_in(iface: &str, netns: Option<&std::path::Path>) -> io::Result<u32> {
    match netns {
        None => ifindex(iface),
        Some(ns) => {
            let name = iface.to_string();
            in_netns(ns, move || ifindex(&name))
        }
    }
}

impl Ring {
    /// Opens the socket on `iface` with the ring `cfg`, `filter` attached
    /// (empty: every frame). Needs CAP_NET_RAW.
    pub fn open(iface: &str, cfg: &RingConfig, filter: &[BpfInsn]) -> io::Result<Ring> {
        let index = ifindex(iface)?;
        let page = 4096u32;
        if cfg.block_size < page || !cfg.block_size.is_power_of_two() || cfg.blocks == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ring blocks must be a power of two of at least {page} bytes, and at least one (got {} × {})",
                    cfg.block_size, cfg.blocks
                ),
            ));
        }
        // SAFETY: plain socket call; the fd is owned at once.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(last_error(
                "opening an AF_PACKET socket (needs CAP_NET_RAW)",
            ));
        }
        // SAFETY: `raw` is a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            PACKET_VERSION,
            &TPACKET_V3,
            "selecting TPACKET_V3",
        )?;
        let frame_size = 2048u32;
        let req = TpacketReq3 {
            block_size: cfg.block_size,
            block_nr: cfg.blocks,
            frame_size,
            frame_nr: cfg.block_size / frame_size * cfg.blocks,
            retire_blk_tov: cfg.retire_ms,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            PACKET_RX_RING,
            &req,
            "setting up the receive ring",
        )?;
        let len = cfg.block_size as usize * cfg.blocks as usize;
        // SAFETY: mapping the ring the kernel just made for this fd.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(last_error("mapping the receive ring"));
        }
        let ring = Ring {
            fd,
            map: map.cast(),
            len,
            block_size: cfg.block_size as usize,
            blocks: cfg.blocks as usize,
            next: 0,
            stats: KernelStats::default(),
        };
        if !filter.is_empty() {
            let prog = SockFprog {
                len: u16::try_from(filter.len()).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a BPF program of over 65,535 instructions",
                    )
                })?,
                filter: filter.as_ptr(),
            };
            setsockopt(
                &ring.fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &prog,
                "attaching the BPF filter",
            )?;
        }
        // SAFETY: zeroed sockaddr_ll is a valid value; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = index as i32;
        // SAFETY: a sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(last_error(&format!(
                "binding the capture socket to {iface}"
            )));
        }
        if cfg.promiscuous {
            let mreq = PacketMreq {
                ifindex: index as i32,
                kind: PACKET_MR_PROMISC,
                alen: 0,
                address: [0; 8],
            };
            setsockopt(
                &ring.fd,
                libc::SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                &mreq,
                "entering promiscuous mode",
            )?;
        }
        Ok(ring)
    }

    /// The kernel's counts so far (they are reset by each read in the
    /// kernel, so they are summed here).
    pub fn stats(&mut self) -> io::Result<KernelStats> {
        let mut s = TpacketStatsV3::default();
        let mut len = std::mem::size_of::<TpacketStatsV3>() as libc::socklen_t;
        // SAFETY: `s` has the size passed in `len`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_STATISTICS,
                (&mut s as *mut TpacketStatsV3).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(last_error("reading the capture socket's statistics"));
        }
        self.stats.packets += u64::from(s.packets);
        self.stats.drops += u64::from(s.drops);
        self.stats.freezes += u64::from(s.freeze_q_cnt);
        Ok(self.stats)
    }

    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY (of callers' use): i < blocks, so the block lies in the map.
        unsafe { self.map.add(i * self.block_size) }
    }

    fn status(&self, i: usize) -> u32 {
        // SAFETY: offset 8 (block_status) lies in the block; the kernel
        // writes it concurrently, hence the volatile read and the fence.
        let s = unsafe { std::ptr::read_volatile(self.block(i).add(8).cast::<u32>()) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        s
    }

    /// Waits up to `timeout` for the next block the kernel has handed over,
    /// passes each of its frames to `on_frame`, and gives the block back.
    /// `Ok(None)`: nothing arrived in time.
    pub fn next_block(
        &mut self,
        timeout: Duration,
        mut on_frame: impl FnMut(Frame<'_>),
    ) -> io::Result<Option<BlockRead>> {
        let i = self.next;
        if self.status(i) & TP_STATUS_USER == 0 {
            let mut p = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLERR,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one pollfd.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    e.kind(),
                    format!("waiting for packets: {e}"),
                ));
            }
            if self.status(i) & TP_STATUS_USER == 0 {
                return Ok(None);
            }
        }
        // SAFETY: the block is in user hands until its status is written
        // back; it is block_size bytes long inside the map.
        let block = unsafe { std::slice::from_raw_parts(self.block(i), self.block_size) };
        let read = walk_block(block, &mut on_frame);
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: handing the block back: status at offset 8.
        unsafe { std::ptr::write_volatile(self.block(i).add(8).cast::<u32>(), TP_STATUS_KERNEL) };
        self.next = (i + 1) % self.blocks;
        Ok(Some(read))
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([s[0], s[1]]))
}

/// The frames of one TPACKET_V3 block (`struct tpacket_block_desc`, then
/// `num_pkts` × `struct tpacket3_hdr` chained by `tp_next_offset`). Every
/// offset is checked against the block: a header that does not fit ends
/// the walk, counted. Pure: tests give it blocks built by hand.
pub fn walk_block(block: &[u8], on_frame: &mut impl FnMut(Frame<'_>)) -> BlockRead {
    let mut read = BlockRead::default();
    let (Some(n), Some(first)) = (u32_at(block, 12), u32_at(block, 16)) else {
        read.bad_headers += 1;
        return read;
    };
    let mut at = first as usize;
    for k in 0..n {
        let hdr = (|| {
            let next = u32_at(block, at)?;
            let sec = u32_at(block, at + 4)?;
            let nsec = u32_at(block, at + 8)?;
            let snap = u32_at(block, at + 12)?;
            let len = u32_at(block, at + 16)?;
            let status = u32_at(block, at + 20)?;
            let mac = u16_at(block, at + 24)?;
            let start = at.checked_add(mac as usize)?;
            let data = block.get(start..start.checked_add(snap as usize)?)?;
            Some((next, sec, nsec, len, status, data))
        })();
        let Some((next, sec, nsec, len, status, data)) = hdr else {
            read.bad_headers += 1;
            return read;
        };
        if status & TP_STATUS_COPY != 0 || (data.len() as u32) < len {
            read.cut += 1;
        }
        read.frames += 1;
        on_frame(Frame {
            ts_ns: u64::from(sec) * 1_000_000_000 + u64::from(nsec),
            data,
            wire_len: len,
        });
        if k + 1 < n {
            if next == 0 {
                read.bad_headers += 1;
                return read;
            }
            at = match at.checked_add(next as usize) {
                Some(a) if a < block.len() => a,
                _ => {
                    read.bad_headers += 1;
                    return read;
                }
            };
        }
    }
    read
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping what `open` mapped, once.
        unsafe {
            libc::munmap(self.map.cast(), self.len);
        }
    }
}

/// Runs `f` on a thread that has entered the network namespace at `path`
/// (`/run/netns/NAME` for `ip netns`): a socket it opens stays in that
/// namespace. The calling thread's namespace is not changed.
pub fn in_netns<T: Send + 'static>(
    path: &std::path::Path,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = std::fs::File::open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("opening the network namespace {}: {e}", path.display()),
        )
    })?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with an open namespace fd.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(last_error(
                "entering the network namespace (needs CAP_SYS_ADMIN)",
            ));
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block with `frames` (each at `tp_mac` 80 after its header).
    fn block(frames: &[&[u8]], size: usize) -> Vec<u8> {
        let mut b = vec![0u8; size];
        b[12..16].copy_from_slice(&(frames.len() as u32).to_ne_bytes());
        b[16..20].copy_from_slice(&48u32.to_ne_bytes());
        let mut at = 48;
        for (k, f) in frames.iter().enumerate() {
            let next = if k + 1 < frames.len() {
                (80 + f.len()).div_ceil(8) * 8
            } else {
                0
            };
            b[at..at + 4].copy_from_slice(&(next as u32).to_ne_bytes());
            b[at + 4..at + 8].copy_from_slice(&(1_700_000_000u32 + k as u32).to_ne_bytes());
            b[at + 8..at + 12].copy_from_slice(&5u32.to_ne_bytes());
            b[at + 12..at + 16].copy_from_slice(&(f.len() as u32).to_ne_bytes());
            b[at + 16..at + 20].copy_from_slice(&(f.len() as u32).to_ne_bytes());
            b[at + 24..at + 26].copy_from_slice(&80u16.to_ne_bytes());
            b[at + 80..at + 80 + f.len()].copy_from_slice(f);
            at += next;
        }
        b
    }

    #[test]
    fn a_block_gives_its_frames_in_order_with_their_times() {
        let b = block(&[b"first frame", b"second", b"third one"], 4096);
        let mut got = vec![];
        let r = walk_block(&b, &mut |f| got.push((f.ts_ns, f.data.to_vec())));
        assert_eq!(
            r,
            BlockRead {
                frames: 3,
                cut: 0,
                bad_headers: 0
            }
        );
        assert_eq!(got[0], (1_700_000_000_000_000_005, b"first frame".to_vec()));
        assert_eq!(got[2].1, b"third one".to_vec());
    }

    #[test]
    fn offsets_outside_the_block_are_counted_not_followed() {
        // A frame whose length runs past the block's end.
        let mut b = block(&[b"abc"], 256);
        b[48 + 12..48 + 16].copy_from_slice(&10_000u32.to_ne_bytes());
        let mut n = 0;
        let r = walk_block(&b, &mut |_| n += 1);
        assert_eq!((n, r.bad_headers), (0, 1));
        // A chain that points past the end, and one that loops on itself.
        let mut b = block(&[b"abc", b"def"], 256);
        b[48..52].copy_from_slice(&4_000u32.to_ne_bytes());
        let r = walk_block(&b, &mut |_| ());
        assert_eq!((r.frames, r.bad_headers), (1, 1));
        let mut b = block(&[b"abc", b"def"], 256);
        b[48..52].copy_from_slice(&0u32.to_ne_bytes());
        let r = walk_block(&b, &mut |_| ());
        assert_eq!((r.frames, r.bad_headers), (1, 1));
        // A block too short for its own descriptor.
        assert_eq!(walk_block(&[0u8; 10], &mut |_| ()).bad_headers, 1);
        // A count of frames far beyond what the block holds ends at the
        // first header that does not fit.
        let mut b = block(&[b"abc"], 256);
        b[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        b[48..52].copy_from_slice(&96u32.to_ne_bytes());
        let r = walk_block(&b, &mut |_| ());
        assert!(r.bad_headers == 1 && r.frames < 10, "{r:?}");
    }

    #[test]
    fn a_cut_frame_is_counted() {
        let mut b = block(&[b"abcdef"], 512);
        b[48 + 16..48 + 20].copy_from_slice(&9000u32.to_ne_bytes());
        let mut wire = 0;
        let r = walk_block(&b, &mut |f| wire = f.wire_len);
        assert_eq!((r.frames, r.cut, wire), (1, 1, 9000));
    }
}
