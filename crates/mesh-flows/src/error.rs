//! Errors: [`Error`] for the crate, [`DecodeError`] for one packet.

/// The protocol layer a [`DecodeError`] refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Link-layer header (Ethernet, SLL, loopback).
    Link,
    /// An 802.1Q / 802.1ad tag.
    Vlan,
    /// IPv4 header.
    Ipv4,
    /// IPv6 header or an extension header.
    Ipv6,
    /// TCP header.
    Tcp,
    /// UDP header.
    Udp,
    /// ICMP or ICMPv6 header.
    Icmp,
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layer::Link => "link",
            Layer::Vlan => "vlan",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Icmp => "icmp",
        })
    }
}

/// Why one packet did not become part of a flow. Cheap (`Copy`): it is
/// returned on the hot path and counted, not logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The capture holds fewer bytes than the header at `layer` needs.
    #[error("truncated {layer} header: needs {needed} bytes, {available} captured")]
    Truncated {
        /// Where.
        layer: Layer,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes captured at that point.
        available: usize,
    },
    /// A header field is impossible.
    #[error("malformed {layer} header: {reason}")]
    Malformed {
        /// Where.
        layer: Layer,
        /// What is wrong.
        reason: &'static str,
    },
    /// Not IP (ARP, LLDP, …): skipped, not corrupt.
    #[error("not an IP packet (ethertype/family {ethertype:#06x})")]
    NonIp {
        /// Ethertype or address family.
        ethertype: u16,
    },
    /// A non-first IP fragment: it has no transport header to key a flow.
    #[error("non-first IP fragment")]
    Fragment,
    /// The capture's link type is not one the decoder reads.
    #[error("unsupported link type {linktype}")]
    UnsupportedLinkType {
        /// The `LINKTYPE_*` number.
        linktype: u32,
    },
}

impl DecodeError {
    /// True for damaged packets (truncated or malformed); false for packets
    /// that are valid but carry no flow (non-IP, fragments, unknown links).
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            DecodeError::Truncated { .. } | DecodeError::Malformed { .. }
        )
    }
}

/// Errors of the sensor crate outside the per-packet path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The capture file is neither pcap nor pcapng, or its framing is broken.
    #[error("capture is corrupt at byte {offset}: {reason}")]
    CorruptCapture {
        /// Byte offset in the capture where reading stopped.
        offset: u64,
        /// What the reader found.
        reason: String,
    },
    /// Reading the capture failed.
    #[error("reading the capture failed at byte {offset}")]
    ReadCapture {
        /// Byte offset in the capture where reading stopped.
        offset: u64,
    },
    /// A line of a label file could not be understood.
    #[error("label file line {line}: {reason}")]
    LabelFile {
        /// 1-based line number.
        line: usize,
        /// What is wrong, and what was expected.
        reason: String,
    },
    /// Writing output failed.
    #[error("writing output failed")]
    Write(#[from] std::io::Error),
}
