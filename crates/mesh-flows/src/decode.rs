//! Packet decoder: link layer → VLAN tags → IPv4/IPv6 (+ extension headers)
//! → TCP/UDP/ICMP, from a borrowed slice, without allocating.
//!
//! Lengths come from the IP header, not from the captured length, so a
//! capture taken with a small snap length still yields the true payload
//! sizes; only the header bytes the decoder needs must have been captured.

use crate::error::{DecodeError, Layer};

/// A capture link type, as the pcap `LINKTYPE_*` number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinkType(pub u32);

impl LinkType {
    /// BSD loopback: 4-byte address family in host byte order.
    pub const NULL: LinkType = LinkType(0);
    /// Ethernet II (with 802.1Q / 802.1ad / QinQ tags).
    pub const ETHERNET: LinkType = LinkType(1);
    /// Raw IP on some BSDs (`DLT_RAW` = 12).
    pub const RAW_BSD: LinkType = LinkType(12);
    /// Raw IP on OpenBSD (`DLT_RAW` = 14).
    pub const RAW_OPENBSD: LinkType = LinkType(14);
    /// Raw IP, version from the first nibble (`LINKTYPE_RAW`).
    pub const RAW: LinkType = LinkType(101);
    /// OpenBSD loopback: 4-byte address family in network byte order.
    pub const LOOP: LinkType = LinkType(108);
    /// Linux "cooked" capture v1 (`tcpdump -i any`).
    pub const LINUX_SLL: LinkType = LinkType(113);
    /// Raw IPv4.
    pub const IPV4: LinkType = LinkType(228);
    /// Raw IPv6.
    pub const IPV6: LinkType = LinkType(229);
    /// Linux "cooked" capture v2.
    pub const LINUX_SLL2: LinkType = LinkType(276);
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

/// IP protocol numbers the decoder understands beyond "some IP payload".
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// An IP address in 16 bytes: IPv6 as is, IPv4 in the last 4 bytes with
/// `v6 == false` (so `::ffff:a.b.c.d` and `a.b.c.d` never collide).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    /// The address bytes; IPv4 uses `bytes[12..16]`.
    pub bytes: [u8; 16],
    /// Whether this is an IPv6 address.
    pub v6: bool,
}

impl Addr {
    /// An IPv4 address.
    pub fn v4(octets: [u8; 4]) -> Addr {
        let mut bytes = [0u8; 16];
        bytes[12..].copy_from_slice(&octets);
        Addr { bytes, v6: false }
    }

    /// An IPv6 address.
    pub fn v6(bytes: [u8; 16]) -> Addr {
        Addr { bytes, v6: true }
    }

    /// As a standard library address.
    pub fn to_ip(self) -> std::net::IpAddr {
        if self.v6 {
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(self.bytes))
        } else {
            let [_, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d] = self.bytes;
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d))
        }
    }
}

impl From<std::net::IpAddr> for Addr {
    fn from(ip: std::net::IpAddr) -> Addr {
        match ip {
            std::net::IpAddr::V4(a) => Addr::v4(a.octets()),
            std::net::IpAddr::V6(a) => Addr::v6(a.octets()),
        }
    }
}

/// What the flow table needs from one packet: small, `Copy`, no borrows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// TCP/UDP source port; ICMP echo identifier; otherwise 0.
    pub src_port: u16,
    /// TCP/UDP destination port; ICMP echo identifier; otherwise 0.
    pub dst_port: u16,
    /// IP protocol number (after IPv6 extension headers).
    pub protocol: u8,
    /// TCP flags byte (0 for non-TCP). See [`tcp_flags`].
    pub tcp_flags: u8,
    /// TCP window field, unscaled (0 for non-TCP).
    pub tcp_window: u16,
    /// Transport header length in bytes: TCP data offset × 4 (options
    /// included), UDP 8, ICMP/ICMPv6 8, other protocols 0.
    pub header_len: u16,
    /// Transport payload length in bytes, from the IP length fields.
    pub payload_len: u32,
}

const MAX_VLAN_TAGS: usize = 4;
const MAX_IPV6_EXT_HEADERS: usize = 8;

#[inline]
fn need(data: &[u8], n: usize, layer: Layer) -> Result<(), DecodeError> {
    if data.len() < n {
        Err(DecodeError::Truncated {
            layer,
            needed: n,
            available: data.len(),
        })
    } else {
        Ok(())
    }
}

#[inline]
fn be16(d: &[u8], at: usize) -> u16 {
    // Callers check bounds with `need` first; `get` keeps this panic-free
    // even if a caller forgets.
    match d.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

#[inline]
fn byte(d: &[u8], at: usize) -> u8 {
    d.get(at).copied().unwrap_or(0)
}

/// Decodes one captured frame of the given link type.
///
/// Never panics; every failure is a [`DecodeError`] that says which layer
/// and why. Frames that are fine but carry no flow (ARP, non-first IP
/// fragments) are errors too, and [`DecodeError::is_corrupt`] tells them
/// apart from damaged packets.
pub fn decode(link: LinkType, data: &[u8]) -> Result<Packet, DecodeError> {
    match link {
        LinkType::ETHERNET => decode_ethernet(data),
        LinkType::RAW | LinkType::RAW_BSD | LinkType::RAW_OPENBSD => decode_ip(data),
        LinkType::IPV4 => decode_ipv4(data),
        LinkType::IPV6 => decode_ipv6(data),
        LinkType::LINUX_SLL => {
            need(data, 16, Layer::Link)?;
            decode_ethertype(be16(data, 14), &data[16..])
        }
        LinkType::LINUX_SLL2 => {
            need(data, 20, Layer::Link)?;
            decode_ethertype(be16(data, 0), &data[20..])
        }
        LinkType::NULL | LinkType::LOOP => {
            need(data, 4, Layer::Link)?;
            let raw = [byte(data, 0), byte(data, 1), byte(data, 2), byte(data, 3)];
            // NULL is host byte order of the capturing machine: accept both.
            let family = if link == LinkType::LOOP {
                u32::from_be_bytes(raw)
            } else {
                let le = u32::from_le_bytes(raw);
                if le < 0x1_0000 {
                    le
                } else {
                    u32::from_be_bytes(raw)
                }
            };
            match family {
                2 => decode_ipv4(&data[4..]),
                10 | 24 | 28 | 30 => decode_ipv6(&data[4..]),
                other => Err(DecodeError::NonIp {
                    ethertype: other as u16,
                }),
            }
        }
        LinkType(other) => Err(DecodeError::UnsupportedLinkType { linktype: other }),
    }
}

fn decode_ethernet(data: &[u8]) -> Result<Packet, DecodeError> {
    need(data, 14, Layer::Link)?;
    let mut ethertype = be16(data, 12);
    let mut rest = &data[14..];
    let mut tags = 0;
    while matches!(ethertype, 0x8100 | 0x88a8 | 0x9100) {
        tags += 1;
        if tags > MAX_VLAN_TAGS {
            return Err(DecodeError::Malformed {
                layer: Layer::Vlan,
                reason: "more than 4 VLAN tags",
            });
        }
        need(rest, 4, Layer::Vlan)?;
        ethertype = be16(rest, 2);
        rest = &rest[4..];
    }
    decode_ethertype(ethertype, rest)
}

fn decode_ethertype(ethertype: u16, rest: &[u8]) -> Result<Packet, DecodeError> {
    match ethertype {
        0x0800 => decode_ipv4(rest),
        0x86dd => decode_ipv6(rest),
        other => Err(DecodeError::NonIp { ethertype: other }),
    }
}

fn decode_ip(data: &[u8]) -> Result<Packet, DecodeError> {
    need(data, 1, Layer::Ipv4)?;
    match byte(data, 0) >> 4 {
        4 => decode_ipv4(data),
        6 => decode_ipv6(data),
        v => Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            reason: if v == 0 {
                "raw IP frame with IP version 0"
            } else {
                "raw IP frame with IP version other than 4 or 6"
            },
        }),
    }
}

fn decode_ipv4(data: &[u8]) -> Result<Packet, DecodeError> {
    need(data, 20, Layer::Ipv4)?;
    let vihl = byte(data, 0);
    if vihl >> 4 != 4 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            reason: "version field is not 4",
        });
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < 20 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            reason: "header length below 20 bytes",
        });
    }
    need(data, ihl, Layer::Ipv4)?;
    let mut total = usize::from(be16(data, 2));
    if total == 0 {
        // Captured before TCP segmentation offload filled the length in.
        total = data.len();
    }
    if total < ihl {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv4,
            reason: "total length shorter than the header",
        });
    }
    let frag = be16(data, 6);
    if frag & 0x1fff != 0 {
        return Err(DecodeError::Fragment);
    }
    let protocol = byte(data, 9);
    let mut src = [0u8; 4];
    let mut dst = [0u8; 4];
    src.copy_from_slice(&data[12..16]);
    dst.copy_from_slice(&data[16..20]);
    let end = total.min(data.len());
    let l4 = &data[ihl..end];
    decode_l4(
        Addr::v4(src),
        Addr::v4(dst),
        protocol,
        l4,
        (total - ihl) as u32,
        false,
    )
}

fn decode_ipv6(data: &[u8]) -> Result<Packet, DecodeError> {
    need(data, 40, Layer::Ipv6)?;
    if byte(data, 0) >> 4 != 6 {
        return Err(DecodeError::Malformed {
            layer: Layer::Ipv6,
            reason: "version field is not 6",
        });
    }
    let mut payload = usize::from(be16(data, 4));
    if payload == 0 {
        // Jumbogram or offloaded length: trust the capture.
        payload = data.len() - 40;
    }
    let mut next = byte(data, 6);
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&data[8..24]);
    dst.copy_from_slice(&data[24..40]);
    let mut rest = &data[40..];
    let mut remaining = payload; // bytes of IPv6 payload not yet walked
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let len = match next {
            // hop-by-hop, routing, destination options
            0 | 43 | 60 => {
                need(rest, 2, Layer::Ipv6)?;
                (usize::from(byte(rest, 1)) + 1) * 8
            }
            44 => {
                need(rest, 8, Layer::Ipv6)?;
                if be16(rest, 2) >> 3 != 0 {
                    return Err(DecodeError::Fragment);
                }
                8
            }
            // authentication header
            51 => {
                need(rest, 2, Layer::Ipv6)?;
                (usize::from(byte(rest, 1)) + 2) * 4
            }
            _ => {
                let end = remaining.min(rest.len());
                return decode_l4(
                    Addr::v6(src),
                    Addr::v6(dst),
                    next,
                    &rest[..end],
                    remaining as u32,
                    true,
                );
            }
        };
        need(rest, len, Layer::Ipv6)?;
        if len > remaining {
            return Err(DecodeError::Malformed {
                layer: Layer::Ipv6,
                reason: "extension header longer than the payload length",
            });
        }
        next = byte(rest, 0);
        rest = &rest[len..];
        remaining -= len;
    }
    Err(DecodeError::Malformed {
        layer: Layer::Ipv6,
        reason: "more than 8 extension headers",
    })
}

/// `l4` is the captured transport bytes (maybe shorter than `l4_len`, the
/// length the IP header claims).
fn decode_l4(
    src: Addr,
    dst: Addr,
    protocol: u8,
    l4: &[u8],
    l4_len: u32,
    v6: bool,
) -> Result<Packet, DecodeError> {
    let mut p = Packet {
        src,
        dst,
        src_port: 0,
        dst_port: 0,
        protocol,
        tcp_flags: 0,
        tcp_window: 0,
        header_len: 0,
        payload_len: l4_len,
    };
    match protocol {
        proto::TCP => {
            need(l4, 20, Layer::Tcp)?;
            let doff = u32::from(byte(l4, 12) >> 4) * 4;
            if doff < 20 {
                return Err(DecodeError::Malformed {
                    layer: Layer::Tcp,
                    reason: "data offset below 20 bytes",
                });
            }
            if doff > l4_len {
                return Err(DecodeError::Malformed {
                    layer: Layer::Tcp,
                    reason: "data offset beyond the IP payload",
                });
            }
            p.src_port = be16(l4, 0);
            p.dst_port = be16(l4, 2);
            p.tcp_flags = byte(l4, 13);
            p.tcp_window = be16(l4, 14);
            p.header_len = doff as u16;
            p.payload_len = l4_len - doff;
        }
        proto::UDP => {
            need(l4, 8, Layer::Udp)?;
            if l4_len < 8 {
                return Err(DecodeError::Malformed {
                    layer: Layer::Udp,
                    reason: "IP payload shorter than the UDP header",
                });
            }
            p.src_port = be16(l4, 0);
            p.dst_port = be16(l4, 2);
            p.header_len = 8;
            p.payload_len = l4_len - 8;
        }
        proto::ICMP | proto::ICMPV6 => {
            need(l4, 8, Layer::Icmp)?;
            if l4_len < 8 {
                return Err(DecodeError::Malformed {
                    layer: Layer::Icmp,
                    reason: "IP payload shorter than the ICMP header",
                });
            }
            let ty = byte(l4, 0);
            let is_echo = if v6 {
                ty == 128 || ty == 129
            } else {
                ty == 8 || ty == 0
            };
            if is_echo {
                // Echo request and reply share the identifier: keying on it
                // keeps each ping session its own bidirectional flow.
                let id = be16(l4, 4);
                p.src_port = id;
                p.dst_port = id;
            }
            p.header_len = 8;
            p.payload_len = l4_len - 8;
        }
        _ => {}
    }
    Ok(p)
}
