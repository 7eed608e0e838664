//! Decoder cases beyond the golden captures: every link type, IPv6
//! extension and fragment headers, offloaded lengths, limits.

mod common;

use ben_mesh_flows::{decode, Addr, DecodeError, Layer, LinkType};
use common::*;

const C6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0c,
];
const S6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,
];

fn v4_udp_ip(payload: usize) -> Vec<u8> {
    let u = udp(1111, 2222, payload);
    cat(&[&ipv4([192, 0, 2, 1], [192, 0, 2, 2], 17, u.len()), &u])
}

#[test]
fn every_link_type_reaches_the_same_packet() {
    let ip = v4_udp_ip(12);
    let want = decode(LinkType::RAW, &ip).unwrap();
    assert_eq!(want.src, Addr::v4([192, 0, 2, 1]));
    assert_eq!(
        (
            want.src_port,
            want.dst_port,
            want.payload_len,
            want.header_len
        ),
        (1111, 2222, 12, 8)
    );
    let sll2 = cat(&[&[0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6], &[0; 8], &ip]);
    let null_le = cat(&[&2u32.to_le_bytes(), &ip]);
    let null_be = cat(&[&2u32.to_be_bytes(), &ip]);
    let cases: [(LinkType, Vec<u8>); 8] = [
        (LinkType::ETHERNET, cat(&[&eth(&[], 0x0800), &ip])),
        (
            LinkType::LINUX_SLL,
            cat(&[&[0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00], &ip]),
        ),
        (LinkType::LINUX_SLL2, sll2),
        (LinkType::NULL, null_le),
        (LinkType::NULL, null_be.clone()),
        (LinkType::LOOP, null_be),
        (LinkType::IPV4, ip.clone()),
        (LinkType::RAW_BSD, ip.clone()),
    ];
    for (link, frame) in cases {
        assert_eq!(decode(link, &frame), Ok(want), "{link:?}");
    }
    assert_eq!(
        decode(LinkType(9999), &ip),
        Err(DecodeError::UnsupportedLinkType { linktype: 9999 })
    );
}

#[test]
fn ipv6_fragments_and_extension_headers() {
    let u = udp(53, 5353, 10);
    // Fragment header, offset 0 (first fragment): decodable.
    let first = [17u8, 0, 0, 0, 0, 0, 0, 1];
    let f = cat(&[&ipv6(C6, S6, 44, 8 + u.len()), &first, &u]);
    let p = decode(LinkType::IPV6, &f).unwrap();
    assert_eq!((p.protocol, p.dst_port, p.payload_len), (17, 5353, 10));
    // Offset 8 bytes (non-first): no transport header.
    let later = [17u8, 0, 0, 8, 0, 0, 0, 1];
    let f = cat(&[&ipv6(C6, S6, 44, 8 + u.len()), &later, &u]);
    assert_eq!(decode(LinkType::IPV6, &f), Err(DecodeError::Fragment));
    // Routing header (16 bytes) then destination options (8) then UDP.
    let rh = [60u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let dopt = [17u8, 0, 1, 4, 0, 0, 0, 0];
    let f = cat(&[&ipv6(C6, S6, 43, 24 + u.len()), &rh, &dopt, &u]);
    let p = decode(LinkType::IPV6, &f).unwrap();
    assert_eq!((p.header_len, p.payload_len), (8, 10));
    // An extension header that claims more than the payload holds.
    let f = cat(&[
        &ipv6(C6, S6, 0, 8),
        &[17u8, 5, 0, 0, 0, 0, 0, 0],
        &[0u8; 48],
    ]);
    assert!(matches!(
        decode(LinkType::IPV6, &f),
        Err(DecodeError::Malformed {
            layer: Layer::Ipv6,
            ..
        })
    ));
    // Nine hop-by-hop headers in a row: over the limit.
    let mut chain = Vec::new();
    for _ in 0..9 {
        chain.extend_from_slice(&[0u8, 0, 0, 0, 0, 0, 0, 0]);
    }
    let f = cat(&[&ipv6(C6, S6, 0, chain.len()), &chain]);
    assert!(matches!(
        decode(LinkType::IPV6, &f),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn icmpv6_echo_keys_on_the_identifier() {
    let m = icmp(128, 0, 0xbeef, 1, 32);
    let f = cat(&[&ipv6(C6, S6, 58, m.len()), &m]);
    let p = decode(LinkType::IPV6, &f).unwrap();
    assert_eq!(
        (p.protocol, p.src_port, p.dst_port, p.payload_len),
        (58, 0xbeef, 0xbeef, 32)
    );
    // Neighbour solicitation: ports 0.
    let m = icmp(135, 0, 0xbeef, 1, 16);
    let f = cat(&[&ipv6(C6, S6, 58, m.len()), &m]);
    assert_eq!(decode(LinkType::IPV6, &f).unwrap().src_port, 0);
}

#[test]
fn lengths_come_from_ip_headers_not_capture_length() {
    // Ethernet padding after a short packet is ignored.
    let mut f = cat(&[&eth(&[], 0x0800), &v4_udp_ip(2)]);
    f.extend_from_slice(&[0u8; 20]);
    assert_eq!(decode(LinkType::ETHERNET, &f).unwrap().payload_len, 2);
    // Snap length cut the payload: the IP length still tells the truth.
    let f = cat(&[&eth(&[], 0x0800), &v4_udp_ip(1000)]);
    assert_eq!(
        decode(LinkType::ETHERNET, &f[..14 + 28 + 5])
            .unwrap()
            .payload_len,
        1000
    );
    // Total length 0 (segmentation offload): use what was captured.
    let mut ip = v4_udp_ip(30);
    ip[2] = 0;
    ip[3] = 0;
    assert_eq!(decode(LinkType::RAW, &ip).unwrap().payload_len, 30);
    // Other IP protocols (GRE) form flows without ports.
    let ip = cat(&[&ipv4([1, 1, 1, 1], [2, 2, 2, 2], 47, 24), &[0u8; 24]]);
    let p = decode(LinkType::RAW, &ip).unwrap();
    assert_eq!(
        (p.protocol, p.src_port, p.header_len, p.payload_len),
        (47, 0, 0, 24)
    );
}

#[test]
fn damaged_headers_name_layer_and_cause() {
    let t = |link, f: &[u8]| decode(link, f).unwrap_err();
    assert_eq!(
        t(LinkType::ETHERNET, &[0; 10]),
        DecodeError::Truncated {
            layer: Layer::Link,
            needed: 14,
            available: 10
        }
    );
    let five_tags: Vec<(u16, u16)> = vec![(0x8100, 1); 5];
    assert!(matches!(
        t(
            LinkType::ETHERNET,
            &cat(&[&eth(&five_tags, 0x0800), &v4_udp_ip(1)])
        ),
        DecodeError::Malformed {
            layer: Layer::Vlan,
            ..
        }
    ));
    assert!(matches!(
        t(LinkType::ETHERNET, &eth(&[(0x8100, 1)], 0x8100)),
        DecodeError::Truncated {
            layer: Layer::Vlan,
            ..
        }
    ));
    let mut ip = v4_udp_ip(4);
    ip[0] = 0x65; // version 6 in an IPv4 frame
    assert!(matches!(
        t(LinkType::IPV4, &ip),
        DecodeError::Malformed {
            layer: Layer::Ipv4,
            ..
        }
    ));
    let mut ip = v4_udp_ip(4);
    ip[3] = 10; // total length shorter than the header
    ip[2] = 0;
    assert!(matches!(
        t(LinkType::RAW, &ip),
        DecodeError::Malformed {
            layer: Layer::Ipv4,
            ..
        }
    ));
    let ip = v4_udp_ip(4);
    assert!(matches!(
        t(LinkType::RAW, &ip[..20 + 5]),
        DecodeError::Truncated {
            layer: Layer::Udp,
            needed: 8,
            available: 5
        }
    ));
    assert!(matches!(
        t(LinkType::RAW, &[0x10]),
        DecodeError::Malformed { .. }
    ));
    assert!(t(LinkType::RAW, &[]).is_corrupt());
    assert!(!DecodeError::Fragment.is_corrupt());
    assert!(!DecodeError::NonIp { ethertype: 0x0806 }.is_corrupt());
    assert_eq!(
        t(LinkType::ETHERNET, &eth(&[], 0x0806)).to_string(),
        "not an IP packet (ethertype/family 0x0806)"
    );
}
