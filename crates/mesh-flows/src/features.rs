//! The versioned feature schema: 78 CICIDS2017 columns, in their order.

/// Version of the feature schema. Bump it whenever a feature's definition,
/// unit or position changes, so models trained on one version are never fed
/// another.
pub const FEATURE_SCHEMA_VERSION: u32 = 1;

/// Schema identifier written next to the version (`cic78/1`).
pub const FEATURE_SCHEMA_ID: &str = "cic78";

/// Number of features in a [`Features`] vector.
pub const FEATURE_COUNT: usize = 78;

macro_rules! features {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// One feature column; `as usize` is its index in [`Features`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        pub enum Feature {
            $( $(#[$doc])* $variant, )*
        }

        /// Feature column names, in schema order, spelled as in the
        /// CICIDS2017 `MachineLearningCVE` CSVs (without their leading spaces).
        pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [ $( $name, )* ];

        /// Every feature, in schema order.
        pub const ALL_FEATURES: [Feature; FEATURE_COUNT] = [ $( Feature::$variant, )* ];
    };
}

features! {
    /// Responder's port (the initiator's destination port).
    DestinationPort = "Destination Port",
    /// Last packet time − first packet time, µs.
    FlowDuration = "Flow Duration",
    /// Packets initiator → responder.
    TotalFwdPackets = "Total Fwd Packets",
    /// Packets responder → initiator.
    TotalBackwardPackets = "Total Backward Packets",
    /// Sum of forward transport payload bytes.
    TotalLengthFwdPackets = "Total Length of Fwd Packets",
    /// Sum of backward transport payload bytes.
    TotalLengthBwdPackets = "Total Length of Bwd Packets",
    /// Largest forward payload.
    FwdPacketLengthMax = "Fwd Packet Length Max",
    /// Smallest forward payload.
    FwdPacketLengthMin = "Fwd Packet Length Min",
    /// Mean forward payload.
    FwdPacketLengthMean = "Fwd Packet Length Mean",
    /// Sample standard deviation of forward payloads.
    FwdPacketLengthStd = "Fwd Packet Length Std",
    /// Largest backward payload (0 without backward packets).
    BwdPacketLengthMax = "Bwd Packet Length Max",
    /// Smallest backward payload (0 without backward packets).
    BwdPacketLengthMin = "Bwd Packet Length Min",
    /// Mean backward payload.
    BwdPacketLengthMean = "Bwd Packet Length Mean",
    /// Sample standard deviation of backward payloads.
    BwdPacketLengthStd = "Bwd Packet Length Std",
    /// Payload bytes per second (0 for a zero-length flow).
    FlowBytesPerSec = "Flow Bytes/s",
    /// Packets per second (0 for a zero-length flow).
    FlowPacketsPerSec = "Flow Packets/s",
    /// Mean gap between consecutive packets, µs.
    FlowIatMean = "Flow IAT Mean",
    /// Sample standard deviation of those gaps, µs.
    FlowIatStd = "Flow IAT Std",
    /// Largest gap, µs.
    FlowIatMax = "Flow IAT Max",
    /// Smallest gap, µs.
    FlowIatMin = "Flow IAT Min",
    /// Sum of gaps between forward packets, µs.
    FwdIatTotal = "Fwd IAT Total",
    /// Mean forward gap, µs.
    FwdIatMean = "Fwd IAT Mean",
    /// Sample standard deviation of forward gaps, µs.
    FwdIatStd = "Fwd IAT Std",
    /// Largest forward gap, µs.
    FwdIatMax = "Fwd IAT Max",
    /// Smallest forward gap, µs.
    FwdIatMin = "Fwd IAT Min",
    /// Sum of gaps between backward packets, µs.
    BwdIatTotal = "Bwd IAT Total",
    /// Mean backward gap, µs.
    BwdIatMean = "Bwd IAT Mean",
    /// Sample standard deviation of backward gaps, µs.
    BwdIatStd = "Bwd IAT Std",
    /// Largest backward gap, µs.
    BwdIatMax = "Bwd IAT Max",
    /// Smallest backward gap, µs.
    BwdIatMin = "Bwd IAT Min",
    /// Forward packets with PSH.
    FwdPshFlags = "Fwd PSH Flags",
    /// Backward packets with PSH.
    BwdPshFlags = "Bwd PSH Flags",
    /// Forward packets with URG.
    FwdUrgFlags = "Fwd URG Flags",
    /// Backward packets with URG.
    BwdUrgFlags = "Bwd URG Flags",
    /// Sum of forward transport header bytes (TCP options included).
    FwdHeaderLength = "Fwd Header Length",
    /// Sum of backward transport header bytes.
    BwdHeaderLength = "Bwd Header Length",
    /// Forward packets per second.
    FwdPacketsPerSec = "Fwd Packets/s",
    /// Backward packets per second.
    BwdPacketsPerSec = "Bwd Packets/s",
    /// Smallest payload, both directions.
    MinPacketLength = "Min Packet Length",
    /// Largest payload, both directions.
    MaxPacketLength = "Max Packet Length",
    /// Mean payload, both directions.
    PacketLengthMean = "Packet Length Mean",
    /// Sample standard deviation of payloads, both directions.
    PacketLengthStd = "Packet Length Std",
    /// Sample variance of payloads, both directions.
    PacketLengthVariance = "Packet Length Variance",
    /// Packets with FIN.
    FinFlagCount = "FIN Flag Count",
    /// Packets with SYN.
    SynFlagCount = "SYN Flag Count",
    /// Packets with RST.
    RstFlagCount = "RST Flag Count",
    /// Packets with PSH.
    PshFlagCount = "PSH Flag Count",
    /// Packets with ACK.
    AckFlagCount = "ACK Flag Count",
    /// Packets with URG.
    UrgFlagCount = "URG Flag Count",
    /// Packets with CWR (CICFlowMeter's column name misspells it "CWE").
    CwrFlagCount = "CWE Flag Count",
    /// Packets with ECE.
    EceFlagCount = "ECE Flag Count",
    /// Backward packets ÷ forward packets.
    DownUpRatio = "Down/Up Ratio",
    /// Total payload ÷ packets.
    AveragePacketSize = "Average Packet Size",
    /// Forward payload ÷ forward packets.
    AvgFwdSegmentSize = "Avg Fwd Segment Size",
    /// Backward payload ÷ backward packets.
    AvgBwdSegmentSize = "Avg Bwd Segment Size",
    /// Same value as `Fwd Header Length` (kept so column positions match CICIDS2017).
    FwdHeaderLength1 = "Fwd Header Length.1",
    /// Forward bulk payload bytes ÷ forward bulks.
    FwdAvgBytesPerBulk = "Fwd Avg Bytes/Bulk",
    /// Forward bulk packets ÷ forward bulks.
    FwdAvgPacketsPerBulk = "Fwd Avg Packets/Bulk",
    /// Forward bulk payload bytes ÷ forward bulk time, bytes/s.
    FwdAvgBulkRate = "Fwd Avg Bulk Rate",
    /// Backward bulk payload bytes ÷ backward bulks.
    BwdAvgBytesPerBulk = "Bwd Avg Bytes/Bulk",
    /// Backward bulk packets ÷ backward bulks.
    BwdAvgPacketsPerBulk = "Bwd Avg Packets/Bulk",
    /// Backward bulk payload bytes ÷ backward bulk time, bytes/s.
    BwdAvgBulkRate = "Bwd Avg Bulk Rate",
    /// Forward packets ÷ subflows.
    SubflowFwdPackets = "Subflow Fwd Packets",
    /// Forward payload bytes ÷ subflows.
    SubflowFwdBytes = "Subflow Fwd Bytes",
    /// Backward packets ÷ subflows.
    SubflowBwdPackets = "Subflow Bwd Packets",
    /// Backward payload bytes ÷ subflows.
    SubflowBwdBytes = "Subflow Bwd Bytes",
    /// TCP window of the first forward packet (−1: none / not TCP).
    InitWinBytesForward = "Init_Win_bytes_forward",
    /// TCP window of the first backward packet (−1: none / not TCP).
    InitWinBytesBackward = "Init_Win_bytes_backward",
    /// Forward packets with at least one payload byte.
    ActDataPktFwd = "act_data_pkt_fwd",
    /// Smallest forward transport header, bytes.
    MinSegSizeForward = "min_seg_size_forward",
    /// Mean active period, µs.
    ActiveMean = "Active Mean",
    /// Sample standard deviation of active periods, µs.
    ActiveStd = "Active Std",
    /// Longest active period, µs.
    ActiveMax = "Active Max",
    /// Shortest active period, µs.
    ActiveMin = "Active Min",
    /// Mean idle period, µs.
    IdleMean = "Idle Mean",
    /// Sample standard deviation of idle periods, µs.
    IdleStd = "Idle Std",
    /// Longest idle period, µs.
    IdleMax = "Idle Max",
    /// Shortest idle period, µs.
    IdleMin = "Idle Min",
}

/// A flow's feature vector, indexed by [`Feature`]; every value is finite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Features(pub [f64; FEATURE_COUNT]);

impl Features {
    /// One feature's value.
    #[inline]
    pub fn get(&self, f: Feature) -> f64 {
        self.0[f as usize]
    }

    /// Sets one feature's value.
    #[inline]
    pub(crate) fn set(&mut self, f: Feature, v: f64) {
        self.0[f as usize] = if v.is_finite() { v } else { 0.0 };
    }

    /// The values in schema order.
    pub fn as_array(&self) -> &[f64; FEATURE_COUNT] {
        &self.0
    }

    /// `(name, value)` pairs in schema order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        FEATURE_NAMES.iter().copied().zip(self.0.iter().copied())
    }
}

impl Feature {
    /// The column name.
    pub fn name(self) -> &'static str {
        FEATURE_NAMES[self as usize]
    }

    /// Looks a feature up by its column name (exact, leading/trailing spaces
    /// ignored, so raw CICIDS2017 headers work).
    pub fn from_name(name: &str) -> Option<Feature> {
        let name = name.trim();
        FEATURE_NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| ALL_FEATURES.get(i).copied())
    }
}
