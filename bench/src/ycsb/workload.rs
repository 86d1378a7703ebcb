//! The workloads: YCSB's core workloads A-F and custom mixes read from a
//! file in YCSB's property format.

use std::fmt;

use rand::Rng;

use super::generator::{Distribution, ZIPFIAN_THETA};

/// One kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    /// Read one record.
    Read,
    /// Overwrite one existing record.
    Update,
    /// Write a new record (the next record number).
    Insert,
    /// Read a short range of records from a start record.
    Scan,
    /// Read a record, then write it back changed.
    ReadModifyWrite,
}

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
    ];

    /// The name in reports (YCSB's: READ, UPDATE, INSERT, SCAN, READ-MODIFY-WRITE).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "READ",
            OpKind::Update => "UPDATE",
            OpKind::Insert => "INSERT",
            OpKind::Scan => "SCAN",
            OpKind::ReadModifyWrite => "READ-MODIFY-WRITE",
        }
    }

    /// Parses a name (case-insensitive; `rmw` for read-modify-write).
    pub fn parse(s: &str) -> Result<OpKind, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "read" => OpKind::Read,
            "update" => OpKind::Update,
            "insert" => OpKind::Insert,
            "scan" => OpKind::Scan,
            "rmw" | "readmodifywrite" | "read-modify-write" => OpKind::ReadModifyWrite,
            other => return Err(format!("unknown operation {other:?} (read, update, insert, scan, rmw)")),
        })
    }

    /// Whether it writes.
    pub fn writes(self) -> bool {
        !matches!(self, OpKind::Read | OpKind::Scan)
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A workload: the operation mix and how records are chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// `A`..`F`, or the custom file's name.
    pub name: String,
    /// One line on what it models.
    pub description: String,
    /// Proportion of each kind, in [`OpKind::ALL`] order (sum > 0; normalized
    /// when drawing).
    pub mix: [f64; 5],
    /// Record choice for reads, updates, scans and read-modify-writes.
    pub request: Distribution,
    /// Longest scan (records); scan lengths are uniform in `1..=max_scan`.
    pub max_scan: u32,
}

impl Workload {
    fn core(name: &str, description: &str, mix: [f64; 5], request: Distribution) -> Workload {
        Workload {
            name: name.to_owned(),
            description: description.to_owned(),
            mix,
            request,
            max_scan: 100,
        }
    }

    /// YCSB core workload `A`..`F` (case-insensitive), with YCSB's request
    /// distributions (zipfian with `theta`, latest for D).
    pub fn core_workload(letter: &str, theta: f64) -> Result<Workload, String> {
        let z = Distribution::Zipfian { theta };
        Ok(match letter.trim().to_ascii_uppercase().as_str() {
            "A" => Workload::core("A", "update heavy: 50% read, 50% update", [0.5, 0.5, 0.0, 0.0, 0.0], z),
            "B" => Workload::core("B", "read mostly: 95% read, 5% update", [0.95, 0.05, 0.0, 0.0, 0.0], z),
            "C" => Workload::core("C", "read only: 100% read", [1.0, 0.0, 0.0, 0.0, 0.0], z),
            "D" => Workload::core(
                "D",
                "read latest: 95% read (latest), 5% insert",
                [0.95, 0.0, 0.05, 0.0, 0.0],
                Distribution::Latest { theta },
            ),
            "E" => Workload::core("E", "short ranges: 95% scan, 5% insert", [0.0, 0.0, 0.05, 0.95, 0.0], z),
            "F" => Workload::core(
                "F",
                "read-modify-write: 50% read, 50% read-modify-write",
                [0.5, 0.0, 0.0, 0.0, 0.5],
                z,
            ),
            other => return Err(format!("unknown workload {other:?} (A, B, C, D, E, F, or @FILE)")),
        })
    }

    /// Parses a custom workload in YCSB's property format (`key=value`
    /// lines, `#` comments): `readproportion`, `updateproportion`,
    /// `insertproportion`, `scanproportion`, `readmodifywriteproportion`,
    /// `requestdistribution` (`uniform`, `zipfian`, `latest`, `hotspot`),
    /// `zipfianconstant`, `hotspotdatafraction`, `hotspotopnfraction`,
    /// `maxscanlength`. YCSB keys that do not change what is measured here
    /// (`workload`, `recordcount`, `operationcount`, `readallfields`,
    /// `fieldcount`, `fieldlength`, ...) are accepted and ignored; any other
    /// key is an error, so a typo is not silently a default.
    pub fn parse_properties(name: &str, text: &str) -> Result<Workload, String> {
        const IGNORED: &[&str] = &[
            "workload",
            "recordcount",
            "operationcount",
            "readallfields",
            "writeallfields",
            "fieldcount",
            "fieldlength",
            "fieldlengthdistribution",
            "insertorder",
            "scanlengthdistribution",
            "table",
        ];
        let mut mix = [0.0; 5];
        let mut dist = "zipfian".to_owned();
        let mut theta = ZIPFIAN_THETA;
        let (mut hot_data, mut hot_ops) = (0.2, 0.8);
        let mut max_scan = 100u32;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{name}:{}: expected key=value, got {line:?}", i + 1))?;
            let (k, v) = (k.trim(), v.trim());
            let num = || {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("{name}:{}: {k} must be a number >= 0, not {v:?}", i + 1))
            };
            match k {
                "readproportion" => mix[0] = num()?,
                "updateproportion" => mix[1] = num()?,
                "insertproportion" => mix[2] = num()?,
                "scanproportion" => mix[3] = num()?,
                "readmodifywriteproportion" => mix[4] = num()?,
                "requestdistribution" => dist = v.to_ascii_lowercase(),
                "zipfianconstant" => theta = num()?,
                "hotspotdatafraction" => hot_data = num()?,
                "hotspotopnfraction" => hot_ops = num()?,
                "maxscanlength" => {
                    max_scan = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("{name}:{}: maxscanlength must be >= 1, not {v:?}", i + 1))?
                }
                k if IGNORED.contains(&k) => {}
                other => return Err(format!("{name}:{}: unknown property {other:?}", i + 1)),
            }
        }
        if mix.iter().sum::<f64>() <= 0.0 {
            return Err(format!("{name}: every operation proportion is zero"));
        }
        let request = match dist.as_str() {
            "zipfian" | "latest" => Distribution::parse(&format!("{dist}:{theta}"))?,
            "hotspot" => Distribution::parse(&format!("hotspot:{hot_data}:{hot_ops}"))?,
            "uniform" => Distribution::Uniform,
            other => return Err(format!("{name}: unknown requestdistribution {other:?}")),
        };
        let parts: Vec<String> = OpKind::ALL
            .iter()
            .zip(mix)
            .filter(|(_, p)| *p > 0.0)
            .map(|(k, p)| {
                format!(
                    "{:.0}% {}",
                    100.0 * p / mix.iter().sum::<f64>(),
                    k.name().to_lowercase()
                )
            })
            .collect();
        Ok(Workload {
            name: name.to_owned(),
            description: format!("custom: {}, {}", parts.join(", "), request.describe()),
            mix,
            request,
            max_scan,
        })
    }

    /// Draws the next operation's kind.
    pub fn next_op(&self, rng: &mut impl Rng) -> OpKind {
        let total: f64 = self.mix.iter().sum();
        let mut u = rng.gen::<f64>() * total;
        for (k, p) in OpKind::ALL.iter().zip(self.mix) {
            if u < p {
                return *k;
            }
            u -= p;
        }
        // Rounding left u at the total: the last kind with a share.
        OpKind::ALL
            .iter()
            .zip(self.mix)
            .rev()
            .find(|(_, p)| *p > 0.0)
            .map_or(OpKind::Read, |(k, _)| *k)
    }
}

/// Parses `--workloads`: letters and `@FILE` entries, comma-separated.
pub fn parse_workloads(list: &str, theta: f64) -> Result<Vec<Workload>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.strip_prefix('@') {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| format!("cannot read workload file {path}: {e}"))?;
                let name = std::path::Path::new(path)
                    .file_stem()
                    .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned());
                Workload::parse_properties(&name, &text)
            }
            None => Workload::core_workload(s, theta),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn shares(w: &Workload, draws: u32) -> [f64; 5] {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut counts = [0u32; 5];
        for _ in 0..draws {
            let k = w.next_op(&mut rng);
            counts[OpKind::ALL.iter().position(|x| *x == k).unwrap_or(0)] += 1;
        }
        counts.map(|c| f64::from(c) / f64::from(draws))
    }

    #[test]
    fn core_workload_mixes_have_ycsb_proportions() {
        let want: [(&str, [f64; 5]); 6] = [
            ("A", [0.5, 0.5, 0.0, 0.0, 0.0]),
            ("B", [0.95, 0.05, 0.0, 0.0, 0.0]),
            ("C", [1.0, 0.0, 0.0, 0.0, 0.0]),
            ("D", [0.95, 0.0, 0.05, 0.0, 0.0]),
            ("E", [0.0, 0.0, 0.05, 0.95, 0.0]),
            ("F", [0.5, 0.0, 0.0, 0.0, 0.5]),
        ];
        for (letter, mix) in want {
            let w = Workload::core_workload(letter, ZIPFIAN_THETA).unwrap();
            let got = shares(&w, 100_000);
            for (g, m) in got.iter().zip(mix) {
                assert!((g - m).abs() < 0.006, "workload {letter}: {got:?} vs {mix:?}");
                // A kind with no share is never drawn.
                assert!(m > 0.0 || *g == 0.0, "workload {letter}: {got:?}");
            }
        }
        assert_eq!(
            Workload::core_workload("d", 0.9).map(|w| w.request).ok(),
            Some(Distribution::Latest { theta: 0.9 })
        );
        assert!(Workload::core_workload("G", 0.99).is_err());
    }

    #[test]
    fn custom_mix_from_properties() {
        let text = "# my mix\nworkload=site.ycsb.workloads.CoreWorkload\nrecordcount=1000\n\
                    readproportion=0.7\nupdateproportion=0.1\nscanproportion=0.2\n\
                    requestdistribution=hotspot\nhotspotdatafraction=0.1\nhotspotopnfraction=0.9\nmaxscanlength=10\n";
        let w = Workload::parse_properties("mine", text).unwrap();
        assert_eq!(w.mix, [0.7, 0.1, 0.0, 0.2, 0.0]);
        assert_eq!(w.max_scan, 10);
        assert_eq!(
            w.request,
            Distribution::Hotspot {
                data_fraction: 0.1,
                op_fraction: 0.9
            }
        );
        let got = shares(&w, 100_000);
        assert!((got[0] - 0.7).abs() < 0.006 && (got[3] - 0.2).abs() < 0.006, "{got:?}");
        assert!(Workload::parse_properties("x", "readproportoin=1").is_err());
        assert!(Workload::parse_properties("x", "readproportion=0").is_err());
        assert!(Workload::parse_properties("x", "readproportion=-1").is_err());
    }
}
