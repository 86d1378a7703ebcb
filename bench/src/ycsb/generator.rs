//! Key and size choosers, as YCSB's `core.generator` package defines them:
//! uniform, zipfian (Gray et al., "Quickly generating billion-record synthetic
//! databases", SIGMOD 1994, with YCSB's incremental zeta), scrambled zipfian,
//! latest (skewed towards the newest record) and hotspot.
//!
//! Every chooser draws a record number in `[0, n)` where `n` is the number of
//! records that exist now (it grows with inserts); [`record_key`] turns it
//! into the record's key.

use rand::Rng;

/// YCSB's default zipfian constant (theta).
pub const ZIPFIAN_THETA: f64 = 0.99;

/// FNV-1a 64 over the 8 little-endian bytes of `v` (YCSB's `Utils.fnvhash64`),
/// used to spread record numbers over the key space and to scramble zipfian
/// ranks.
pub fn fnv64(v: u64) -> u64 {
    const OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut x = v;
    for _ in 0..8 {
        h ^= x & 0xff;
        h = h.wrapping_mul(PRIME);
        x >>= 8;
    }
    h
}

/// The key of record `n`: YCSB's hashed insert order, `user` + the decimal
/// FNV hash of the record number (so consecutive records are scattered over
/// the key space, as with YCSB's default `insertorder=hashed`).
pub fn record_key(n: u64) -> String {
    format!("user{}", fnv64(n))
}

/// `sum_{i=1..n} 1 / i^theta`, continued from `from` (whose sum is `start`).
fn zeta(from: u64, n: u64, theta: f64, start: f64) -> f64 {
    let mut sum = start;
    for i in from..n {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// Zipfian ranks in `[0, n)`: rank 0 is the most popular, with probability
/// `1 / zeta(n)`; rank `i` has probability proportional to `1 / (i+1)^theta`.
/// `n` may grow between draws; zeta is extended incrementally (YCSB does the
/// same), so growth costs one term per new item.
#[derive(Debug, Clone)]
pub struct Zipfian {
    theta: f64,
    alpha: f64,
    zeta2: f64,
    /// Items covered by `zetan`.
    n: u64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A generator over `n >= 1` items with exponent `theta` in `(0, 1)`.
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let n = n.max(1);
        let zeta2 = zeta(0, 2, theta, 0.0);
        let zetan = zeta(0, n, theta, 0.0);
        let mut z = Zipfian {
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2,
            n,
            zetan,
            eta: 0.0,
        };
        z.eta = z.eta_for(n);
        z
    }

    fn eta_for(&self, n: u64) -> f64 {
        (1.0 - (2.0 / n as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// The exponent.
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// A rank in `[0, n)`; `n` may be larger than at the last draw.
    pub fn next(&mut self, rng: &mut impl Rng, n: u64) -> u64 {
        let n = n.max(1);
        if n > self.n {
            self.zetan = zeta(self.n, n, self.theta, self.zetan);
            self.n = n;
            self.eta = self.eta_for(n);
        }
        let u: f64 = rng.gen();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(n - 1)
    }
}

/// How a workload picks the record an operation touches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every existing record equally likely.
    Uniform,
    /// Scrambled zipfian with this theta: popular records are spread over
    /// the key space rather than clustered at the low record numbers.
    Zipfian {
        /// The exponent (YCSB's `zipfianconstant`, default 0.99).
        theta: f64,
    },
    /// The newest records most likely: record `n - 1 - zipfian rank`.
    Latest {
        /// The exponent of the zipfian rank.
        theta: f64,
    },
    /// `op_fraction` of the operations go to the first `data_fraction` of
    /// the records (uniformly), the rest to the others.
    Hotspot {
        /// Share of the records that are hot.
        data_fraction: f64,
        /// Share of the operations that go to hot records.
        op_fraction: f64,
    },
}

impl Distribution {
    /// Parses `uniform`, `zipfian[:THETA]`, `latest[:THETA]`,
    /// `hotspot[:DATA_FRACTION:OP_FRACTION]` (defaults 0.99; 0.2 and 0.8).
    pub fn parse(s: &str) -> Result<Distribution, String> {
        let mut parts = s.trim().split(':');
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        let nums: Vec<f64> = parts
            .map(|p| {
                p.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("bad number {p:?} in {s:?}"))
            })
            .collect::<Result<_, _>>()?;
        let theta = |nums: &[f64]| -> Result<f64, String> {
            let t = nums.first().copied().unwrap_or(ZIPFIAN_THETA);
            if t > 0.0 && t < 1.0 {
                Ok(t)
            } else {
                Err(format!("zipfian theta must be in (0, 1), not {t}"))
            }
        };
        let d = match (name.as_str(), nums.len()) {
            ("uniform", 0) => Distribution::Uniform,
            ("zipfian", 0 | 1) => Distribution::Zipfian { theta: theta(&nums)? },
            ("latest", 0 | 1) => Distribution::Latest { theta: theta(&nums)? },
            ("hotspot", 0) => Distribution::Hotspot {
                data_fraction: 0.2,
                op_fraction: 0.8,
            },
            ("hotspot", 2) => Distribution::Hotspot {
                data_fraction: nums[0],
                op_fraction: nums[1],
            },
            _ => {
                return Err(format!(
                    "unknown distribution {s:?} (uniform, zipfian[:THETA], latest[:THETA], hotspot[:DATA:OPS])"
                ))
            }
        };
        if let Distribution::Hotspot {
            data_fraction,
            op_fraction,
        } = d
        {
            if !(0.0..=1.0).contains(&data_fraction) || !(0.0..=1.0).contains(&op_fraction) {
                return Err(format!("hotspot fractions must be in [0, 1]: {s:?}"));
            }
        }
        Ok(d)
    }

    /// The name and parameters, as [`Distribution::parse`] reads them.
    pub fn describe(&self) -> String {
        match self {
            Distribution::Uniform => "uniform".to_owned(),
            Distribution::Zipfian { theta } => format!("zipfian:{theta}"),
            Distribution::Latest { theta } => format!("latest:{theta}"),
            Distribution::Hotspot {
                data_fraction,
                op_fraction,
            } => format!("hotspot:{data_fraction}:{op_fraction}"),
        }
    }
}

/// A [`Distribution`] with its state (one per client task: the zipfian's
/// zeta is extended as records are inserted).
#[derive(Debug, Clone)]
pub struct KeyChooser {
    dist: Distribution,
    zipf: Option<Zipfian>,
}

impl KeyChooser {
    /// A chooser for `dist` over `records` initial records.
    pub fn new(dist: Distribution, records: u64) -> KeyChooser {
        let zipf = match dist {
            Distribution::Zipfian { theta } | Distribution::Latest { theta } => Some(Zipfian::new(records, theta)),
            Distribution::Uniform | Distribution::Hotspot { .. } => None,
        };
        KeyChooser { dist, zipf }
    }

    /// A record number in `[0, n)` (`n` = records that exist now, >= 1).
    pub fn next(&mut self, rng: &mut impl Rng, n: u64) -> u64 {
        let n = n.max(1);
        match (self.dist, self.zipf.as_mut()) {
            (Distribution::Zipfian { .. }, Some(z)) => fnv64(z.next(rng, n)) % n,
            (Distribution::Latest { .. }, Some(z)) => n - 1 - z.next(rng, n),
            (
                Distribution::Hotspot {
                    data_fraction,
                    op_fraction,
                },
                _,
            ) => {
                let hot = ((n as f64 * data_fraction) as u64).clamp(1, n);
                if hot == n || rng.gen::<f64>() < op_fraction {
                    rng.gen_range(0..hot)
                } else {
                    rng.gen_range(hot..n)
                }
            }
            _ => rng.gen_range(0..n),
        }
    }
}

/// How big the values an operation writes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueSize {
    /// Always this many bytes.
    Fixed(usize),
    /// Uniform in `[min, max]`.
    Uniform {
        /// Smallest size.
        min: usize,
        /// Largest size.
        max: usize,
    },
    /// Zipfian over `[min, max]`, small sizes most likely (YCSB's
    /// `fieldlengthdistribution=zipfian`).
    Zipfian {
        /// Smallest (most likely) size.
        min: usize,
        /// Largest size.
        max: usize,
    },
}

impl ValueSize {
    /// Parses `N`, `fixed:N`, `uniform:MIN:MAX` or `zipfian:MIN:MAX`.
    pub fn parse(s: &str) -> Result<ValueSize, String> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let num = |p: &str| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("bad size {p:?} in {s:?}"))
        };
        let v = match parts.as_slice() {
            [n] => ValueSize::Fixed(num(n)?),
            ["fixed", n] => ValueSize::Fixed(num(n)?),
            ["uniform", a, b] => ValueSize::Uniform {
                min: num(a)?,
                max: num(b)?,
            },
            ["zipfian", a, b] => ValueSize::Zipfian {
                min: num(a)?,
                max: num(b)?,
            },
            _ => {
                return Err(format!(
                    "unknown value size {s:?} (N, uniform:MIN:MAX, zipfian:MIN:MAX)"
                ))
            }
        };
        match v {
            ValueSize::Uniform { min, max } | ValueSize::Zipfian { min, max } if min > max => {
                Err(format!("value size minimum {min} is above the maximum {max}"))
            }
            _ => Ok(v),
        }
    }

    /// The largest size it can give.
    pub fn max(&self) -> usize {
        match *self {
            ValueSize::Fixed(n) => n,
            ValueSize::Uniform { max, .. } | ValueSize::Zipfian { max, .. } => max,
        }
    }

    /// The mean size (for the report and the planner).
    pub fn mean(&self) -> f64 {
        match *self {
            ValueSize::Fixed(n) => n as f64,
            ValueSize::Uniform { min, max } => (min + max) as f64 / 2.0,
            ValueSize::Zipfian { min, max } => {
                // Exact for the generator below: ranks 0..k with zipfian weights.
                let k = (max - min + 1) as u64;
                let z = zeta(0, k, ZIPFIAN_THETA, 0.0);
                let mean_rank: f64 = (0..k)
                    .map(|i| i as f64 / ((i + 1) as f64).powf(ZIPFIAN_THETA))
                    .sum::<f64>()
                    / z;
                min as f64 + mean_rank
            }
        }
    }

    /// The name and parameters, as [`ValueSize::parse`] reads them.
    pub fn describe(&self) -> String {
        match self {
            ValueSize::Fixed(n) => format!("fixed:{n}"),
            ValueSize::Uniform { min, max } => format!("uniform:{min}:{max}"),
            ValueSize::Zipfian { min, max } => format!("zipfian:{min}:{max}"),
        }
    }
}

/// Draws value sizes.
#[derive(Debug, Clone)]
pub struct SizeChooser {
    size: ValueSize,
    zipf: Option<Zipfian>,
}

impl SizeChooser {
    /// A chooser for `size`.
    pub fn new(size: ValueSize) -> SizeChooser {
        let zipf = match size {
            ValueSize::Zipfian { min, max } => Some(Zipfian::new((max - min + 1) as u64, ZIPFIAN_THETA)),
            _ => None,
        };
        SizeChooser { size, zipf }
    }

    /// The next size.
    pub fn next(&mut self, rng: &mut impl Rng) -> usize {
        match (self.size, self.zipf.as_mut()) {
            (ValueSize::Fixed(n), _) => n,
            (ValueSize::Uniform { min, max }, _) => rng.gen_range(min..=max),
            (ValueSize::Zipfian { min, max }, Some(z)) => min + z.next(rng, (max - min + 1) as u64) as usize,
            (ValueSize::Zipfian { min, .. }, None) => min,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const DRAWS: u64 = 200_000;

    #[test]
    fn zipfian_rank_frequencies_follow_the_law() {
        // P(rank 0) = 1 / zeta(n, theta); P(rank i) / P(rank 0) = 1 / (i+1)^theta.
        let n = 1000;
        let theta = 0.99;
        let mut z = Zipfian::new(n, theta);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..DRAWS {
            counts[z.next(&mut rng, n) as usize] += 1;
        }
        let zn = zeta(0, n, theta, 0.0);
        let p0 = counts[0] as f64 / DRAWS as f64;
        let want0 = 1.0 / zn;
        assert!((p0 - want0).abs() < 0.1 * want0, "rank 0: {p0} vs {want0}");
        // Rank 1 (the generator's special case) and a mid rank.
        let p1 = counts[1] as f64 / DRAWS as f64;
        let want1 = want0 / 2f64.powf(theta);
        assert!((p1 - want1).abs() < 0.1 * want1, "rank 1: {p1} vs {want1}");
        let p9 = counts[9] as f64 / DRAWS as f64;
        let want9 = want0 / 10f64.powf(theta);
        assert!((p9 - want9).abs() < 0.2 * want9, "rank 9: {p9} vs {want9}");
        // The head carries most of the mass: top 10% of ranks over 60% of draws.
        let head: u64 = counts[..100].iter().sum();
        assert!(
            head as f64 / DRAWS as f64 > 0.6,
            "head share {}",
            head as f64 / DRAWS as f64
        );
    }

    #[test]
    fn zipfian_extends_when_records_grow() {
        let mut z = Zipfian::new(10, 0.99);
        let mut rng = SmallRng::seed_from_u64(2);
        let grown = Zipfian::new(1000, 0.99);
        for _ in 0..1000 {
            assert!(z.next(&mut rng, 10) < 10);
        }
        for _ in 0..1000 {
            assert!(z.next(&mut rng, 1000) < 1000);
        }
        assert!((z.zetan - grown.zetan).abs() < 1e-9);
        assert!((z.eta - grown.eta).abs() < 1e-9);
    }

    #[test]
    fn scrambled_zipfian_spreads_the_popular_records() {
        let n = 1000;
        let mut c = KeyChooser::new(Distribution::Zipfian { theta: 0.99 }, n);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..DRAWS {
            counts[c.next(&mut rng, n) as usize] += 1;
        }
        let top = counts.iter().copied().max().unwrap_or(0) as f64 / DRAWS as f64;
        let want0 = 1.0 / zeta(0, n, 0.99, 0.0);
        // The most popular record is rank 0's image (possibly plus a
        // collision), wherever the hash put it.
        assert!(top >= 0.9 * want0, "top {top} vs {want0}");
        let top_at = counts.iter().position(|&k| k as f64 / DRAWS as f64 == top).unwrap_or(0) as u64;
        assert_eq!(top_at, fnv64(0) % n);
    }

    #[test]
    fn latest_prefers_the_newest_records() {
        let mut c = KeyChooser::new(Distribution::Latest { theta: 0.99 }, 100);
        let mut rng = SmallRng::seed_from_u64(4);
        let n = 500;
        let mut newest = 0;
        let mut newest10 = 0;
        for _ in 0..DRAWS {
            let k = c.next(&mut rng, n);
            assert!(k < n);
            newest += u64::from(k == n - 1);
            newest10 += u64::from(k >= n - 10);
        }
        let want = 1.0 / zeta(0, n, 0.99, 0.0);
        let p = newest as f64 / DRAWS as f64;
        assert!((p - want).abs() < 0.1 * want, "newest {p} vs {want}");
        assert!(newest10 as f64 / DRAWS as f64 > 0.35);
    }

    #[test]
    fn hotspot_sends_its_share_to_the_hot_set() {
        let mut c = KeyChooser::new(
            Distribution::Hotspot {
                data_fraction: 0.2,
                op_fraction: 0.8,
            },
            1000,
        );
        let mut rng = SmallRng::seed_from_u64(5);
        let hot = (0..DRAWS).filter(|_| c.next(&mut rng, 1000) < 200).count() as f64 / DRAWS as f64;
        assert!((hot - 0.8).abs() < 0.01, "hot share {hot}");
    }

    #[test]
    fn uniform_is_flat() {
        let mut c = KeyChooser::new(Distribution::Uniform, 10);
        let mut rng = SmallRng::seed_from_u64(6);
        let mut counts = [0u64; 10];
        for _ in 0..DRAWS {
            counts[c.next(&mut rng, 10) as usize] += 1;
        }
        for k in counts {
            assert!((k as f64 / DRAWS as f64 - 0.1).abs() < 0.005, "{counts:?}");
        }
    }

    #[test]
    fn distributions_and_sizes_parse() {
        assert_eq!(
            Distribution::parse("zipfian").ok(),
            Some(Distribution::Zipfian { theta: 0.99 })
        );
        assert_eq!(
            Distribution::parse("zipfian:0.5").ok(),
            Some(Distribution::Zipfian { theta: 0.5 })
        );
        assert_eq!(
            Distribution::parse("hotspot:0.1:0.9").ok(),
            Some(Distribution::Hotspot {
                data_fraction: 0.1,
                op_fraction: 0.9
            })
        );
        assert!(Distribution::parse("zipfian:1.5").is_err());
        assert!(Distribution::parse("pareto").is_err());
        assert_eq!(ValueSize::parse("1024").ok(), Some(ValueSize::Fixed(1024)));
        assert_eq!(
            ValueSize::parse("uniform:10:20").ok(),
            Some(ValueSize::Uniform { min: 10, max: 20 })
        );
        assert!(ValueSize::parse("uniform:20:10").is_err());
        let mut s = SizeChooser::new(ValueSize::Zipfian { min: 100, max: 1000 });
        let mut rng = SmallRng::seed_from_u64(7);
        let mean = (0..DRAWS).map(|_| s.next(&mut rng) as f64).sum::<f64>() / DRAWS as f64;
        let want = ValueSize::Zipfian { min: 100, max: 1000 }.mean();
        assert!((mean - want).abs() < 0.05 * want, "mean {mean} vs {want}");
    }
}
