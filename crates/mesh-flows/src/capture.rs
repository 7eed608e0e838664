//! Reading pcap and pcapng captures into `(timestamp, link type, bytes)`.
//!
//! A thin shell over `pcap-parser`: it owns no flow logic, reads in a fixed
//! buffer (grown only for oversized records, up to [`MAX_RECORD_BYTES`]) and
//! hands each packet to a callback as a borrowed slice.

use crate::decode::LinkType;
use crate::error::Error;
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{create_reader, PcapBlockOwned, PcapError};
use std::io::Read;

/// Initial read buffer.
const BUFFER_BYTES: usize = 256 << 10;
/// Largest record the reader accepts; anything larger is a corrupt capture.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// What the capture reader saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packet records delivered to the callback.
    pub packets: u64,
    /// Records whose captured length is below the original length (snap
    /// length); they are still delivered.
    pub snapped: u64,
    /// pcapng packets naming an interface that was never described, or
    /// whose timestamp resolution is invalid (not delivered).
    pub bad_interface: u64,
    /// The file ended in the middle of a record (e.g. the capture was cut
    /// off); everything before it was delivered.
    pub truncated_tail: bool,
}

#[derive(Clone, Copy)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second.
    resolution: u64,
    offset_s: i64,
}

#[inline]
fn to_ns(units: u64, resolution: u64, offset_s: i64) -> u64 {
    let ns = if resolution == 1_000_000_000 {
        u128::from(units)
    } else {
        u128::from(units) * 1_000_000_000 / u128::from(resolution.max(1))
    };
    let ns = ns as i128 + i128::from(offset_s) * 1_000_000_000;
    ns.clamp(0, i128::from(u64::MAX)) as u64
}

/// Reads a pcap or pcapng stream and calls `on_packet(ts_ns, link, frame)`
/// for every packet, in file order.
///
/// Returns the reader's statistics, or [`Error::CorruptCapture`] /
/// [`Error::ReadCapture`] if the file cannot be read to its end; packets
/// before that point have already been delivered.
pub fn read_capture<R, F>(input: R, mut on_packet: F) -> Result<CaptureStats, Error>
where
    R: Read + Send,
    F: FnMut(u64, LinkType, &[u8]),
{
    let mut stats = CaptureStats::default();
    let mut reader = match create_reader(BUFFER_BYTES, input) {
        Ok(r) => r,
        Err(PcapError::Eof) => {
            return Err(Error::CorruptCapture {
                offset: 0,
                reason: "empty file".into(),
            })
        }
        Err(e) => {
            return Err(Error::CorruptCapture {
                offset: 0,
                reason: format!("not a pcap or pcapng file ({})", describe(&e)),
            })
        }
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut legacy = Interface {
        link: LinkType::ETHERNET,
        resolution: 1_000_000,
        offset_s: 0,
    };
    let mut last_ts = 0u64;
    let mut buffer = BUFFER_BYTES;
    loop {
        let offset = reader.consumed() as u64;
        match reader.next() {
            Ok((len, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy.link = LinkType(h.network.0 as u32);
                        legacy.resolution = if h.is_nanosecond_precision() {
                            1_000_000_000
                        } else {
                            1_000_000
                        };
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let frac = u64::from(b.ts_usec);
                        let ts = u64::from(b.ts_sec) * 1_000_000_000
                            + if legacy.resolution == 1_000_000 {
                                frac * 1000
                            } else {
                                frac
                            };
                        stats.packets += 1;
                        if b.caplen < b.origlen {
                            stats.snapped += 1;
                        }
                        let n = (b.caplen as usize).min(b.data.len());
                        last_ts = ts;
                        on_packet(ts, legacy.link, &b.data[..n]);
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let resolution = idb.ts_resolution().unwrap_or(0);
                        interfaces.push(Interface {
                            link: LinkType(idb.linktype.0 as u32),
                            resolution,
                            offset_s: idb.ts_offset(),
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        match interfaces.get(epb.if_id as usize) {
                            Some(ifc) if ifc.resolution > 0 => {
                                let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                                let ts = to_ns(units, ifc.resolution, ifc.offset_s);
                                stats.packets += 1;
                                if epb.caplen < epb.origlen {
                                    stats.snapped += 1;
                                }
                                last_ts = ts;
                                on_packet(ts, ifc.link, epb.packet_data());
                            }
                            _ => stats.bad_interface += 1,
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => match interfaces.first() {
                        // Simple packets carry no timestamp: they inherit the
                        // previous packet's time.
                        Some(ifc) => {
                            stats.packets += 1;
                            on_packet(last_ts, ifc.link, spb.packet_data());
                        }
                        None => stats.bad_interface += 1,
                    },
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(len);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.refill().is_err() {
                    return Err(Error::ReadCapture { offset });
                }
            }
            Err(PcapError::UnexpectedEof) => {
                stats.truncated_tail = true;
                break;
            }
            Err(PcapError::BufferTooSmall) => {
                buffer *= 2;
                if buffer > MAX_RECORD_BYTES || !reader.grow(buffer) {
                    return Err(Error::CorruptCapture {
                        offset,
                        reason: format!("record larger than {MAX_RECORD_BYTES} bytes"),
                    });
                }
                if reader.refill().is_err() {
                    return Err(Error::ReadCapture { offset });
                }
            }
            Err(PcapError::ReadError) => return Err(Error::ReadCapture { offset }),
            Err(e) => {
                return Err(Error::CorruptCapture {
                    offset,
                    reason: format!("unreadable block ({})", describe(&e)),
                })
            }
        }
    }
    Ok(stats)
}

/// A one-line description that never dumps the buffer contents.
fn describe<I>(e: &PcapError<I>) -> String {
    match e {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("parse error: {kind:?}")
        }
        PcapError::HeaderNotRecognized => "header not recognized as pcap or pcapng".into(),
        PcapError::Eof => "end of file".into(),
        PcapError::UnexpectedEof => "unexpected end of file".into(),
        PcapError::BufferTooSmall => "record too large".into(),
        PcapError::ReadError => "read error".into(),
        PcapError::Incomplete(n) => format!("incomplete, {n} more bytes needed"),
    }
}

/// A capture's flows as CSV rows (no header, no line ends), its timestamps
/// moved so its last packet is at `now_ns`: a recorded capture replayed as
/// if it had just happened (`ben up --demo`, end-to-end tests). Returns
/// the packets read and the rows; packets the table cannot decode are
/// counted there, as `ben flows` counts them.
pub fn replay_rows(capture: &[u8], now_ns: u64) -> Result<(usize, Vec<Vec<u8>>), Error> {
    let mut last = 0;
    read_capture(capture, |ts, _, _| last = last.max(ts))?;
    let shift = now_ns.saturating_sub(last);
    let mut table = crate::FlowTable::new(crate::Config::default());
    read_capture(capture, |ts, link, frame| {
        // A frame that does not decode is counted in the table's counters
        // (truncated, malformed, non-IP, …), as `ben flows` counts it.
        let _ = table.push(ts + shift, link, frame);
    })?;
    table.finish_all();
    let packets = table.counters().packets as usize;
    let mut rows = vec![];
    for r in table.drain_finished() {
        rows.push(crate::output::csv_line(&r));
    }
    Ok((packets, rows))
}
