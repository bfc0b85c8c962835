//! llama-bench's spellings on every bench binary: what a run measures, chosen at run time.
//!
//! `-p 512 -n 128 -pg 512,128 -d 0,512 -t 1,2,4 -b 2048 -ub 512 -ctk f16,q8_0 -ctv f16 -fa 0,1
//! -ngl 0 -r 5`: each takes a comma list, integers also ranges (`1-8` every value, `1-8+2`
//! stepping, `1-16*2` multiplying, as llama-bench reads them), and a flag may repeat. An axis
//! given replaces what `melt_bench!` declared for it; `-p`, `-n` and `-pg` together replace the
//! declared workloads, and `-d` puts every workload at each depth.
//!
//! llama-bench's `-b` and `-n` win over criterion's short spellings of `--baseline` and
//! `--noplot`, whose long forms stay.

use crate::params::{FlashAttn, Sweep};
use crate::workload::{pp, pp_tg, tg, Workload};

use super::values::Expected;

/// llama-bench's multi-letter short flags and the long flags clap knows them by.
const MULTI_LETTER: [(&str, &str); 6] = [
    ("-pg", "--pg"),
    ("-ub", "--ubatch-size"),
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
    ("-fa", "--flash-attn"),
    ("-ngl", "--n-gpu-layers"),
];

/// The arguments with llama-bench's multi-letter short flags (`-pg`, `-ub`, …) spelt long,
/// which clap can parse (its short flags are one letter).
pub(super) fn long_forms(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            for (short, long) in MULTI_LETTER {
                if a == short {
                    return long.to_string();
                }
                if let Some(value) = a.strip_prefix(short).and_then(|v| v.strip_prefix('=')) {
                    return format!("{long}={value}");
                }
            }
            a
        })
        .collect()
}

/// One flag's comma list (a flag may repeat: its lists are joined).
#[derive(Debug, Clone, PartialEq)]
pub struct List<T>(pub Vec<T>);

const INTS: &str = "whole numbers: a comma list such as 1,2,4, or a range: 1-8, 1-8+2, 1-16*2";

/// `first-last`, `first-last+step` or `first-last*factor`, or one number.
fn int_item(item: &str) -> Result<Vec<u64>, Expected> {
    let bad = || Expected(INTS);
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| bad());
    let Some((first, rest)) = item.split_once('-') else {
        return Ok(vec![num(item)?]);
    };
    let first = num(first)?;
    let (last, add, factor) = match (rest.split_once('+'), rest.split_once('*')) {
        (Some((last, step)), _) => (num(last)?, num(step)?, 1),
        (None, Some((last, factor))) => (num(last)?, 0, num(factor)?),
        (None, None) => (num(rest)?, 1, 1),
    };
    // Every range must climb: a step of 0, or a factor of 0 or 1 (or from 0), never would.
    let climbs = add > 0 || (factor > 1 && first > 0);
    if first > last || (first < last && !climbs) {
        return Err(bad());
    }
    let mut out = vec![first];
    while let Some(next) = out[out.len() - 1]
        .checked_mul(factor)
        .and_then(|x| x.checked_add(add))
    {
        if next > last {
            break;
        }
        out.push(next);
        if out.len() > 4096 {
            return Err(bad());
        }
    }
    Ok(out)
}

fn ints(value: &str) -> Result<Vec<u64>, Expected> {
    let mut out = Vec::new();
    for item in value.split(',') {
        out.extend(int_item(item)?);
    }
    Ok(out)
}

pub(super) fn usizes(value: &str) -> Result<List<usize>, Expected> {
    Ok(List(ints(value)?.into_iter().map(|x| x as usize).collect()))
}

pub(super) fn positive_usizes(value: &str) -> Result<List<usize>, Expected> {
    let List(v) = usizes(value)?;
    if v.contains(&0) {
        return Err(Expected("positive whole numbers (a comma list or a range)"));
    }
    Ok(List(v))
}

pub(super) fn u32s(value: &str) -> Result<List<u32>, Expected> {
    ints(value)?
        .into_iter()
        .map(|x| u32::try_from(x).map_err(|_| Expected(INTS)))
        .collect::<Result<_, _>>()
        .map(List)
}

/// `-pg 512,128`: one prompt-then-generate pair.
pub(super) fn pair(value: &str) -> Result<(usize, usize), Expected> {
    let bad = || Expected("a pair of token counts such as 512,128");
    let (p, g) = value.split_once(',').ok_or_else(bad)?;
    let p = p.trim().parse().map_err(|_| bad())?;
    let g = g.trim().parse().map_err(|_| bad())?;
    Ok((p, g))
}

/// `-fa 0,1` (llama-bench's old spelling) or `on,off,auto`.
pub(super) fn flash_attn(value: &str) -> Result<List<FlashAttn>, Expected> {
    value
        .split(',')
        .map(|v| match v.trim() {
            "1" | "on" | "true" => Ok(FlashAttn::On),
            "0" | "off" | "false" => Ok(FlashAttn::Off),
            "auto" => Ok(FlashAttn::Auto),
            _ => Err(Expected("0, 1, on, off or auto (a comma list)")),
        })
        .collect::<Result<_, _>>()
        .map(List)
}

/// `-ctk f16,q8_0`: KV cache types (the engine refuses one it does not know, by name).
pub(super) fn names(value: &str) -> Result<List<String>, Expected> {
    let v: Vec<String> = value.split(',').map(|s| s.trim().to_string()).collect();
    if v.iter().any(String::is_empty) {
        return Err(Expected("a comma list of names such as f16,q8_0"));
    }
    Ok(List(v))
}

/// What the command line sets over what `melt_bench!` declared; an empty field keeps it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SweepArgs {
    pub n_prompt: Vec<usize>,
    pub n_gen: Vec<usize>,
    pub pg: Vec<(usize, usize)>,
    pub depth: Vec<usize>,
    pub threads: Vec<usize>,
    pub n_batch: Vec<u32>,
    pub n_ubatch: Vec<u32>,
    pub type_k: Vec<String>,
    pub type_v: Vec<String>,
    pub flash_attn: Vec<FlashAttn>,
    pub n_gpu_layers: Vec<u32>,
}

/// The lists of every occurrence of one flag, joined.
pub(super) fn joined<T>(lists: Vec<List<T>>) -> Vec<T> {
    lists.into_iter().flat_map(|List(v)| v).collect()
}

/// A sweep axis's values live as long as the run (`Sweep` holds `&'static str`, as a
/// bench target's literals are): the few names a command line gives are leaked once.
fn leaked(names: &[String]) -> Vec<&'static str> {
    names
        .iter()
        .map(|n| &*Box::leak(n.clone().into_boxed_str()))
        .collect()
}

impl SweepArgs {
    /// The workloads a run measures: `-p`/`-n`/`-pg` instead of the declared ones when any
    /// is given (a 0 in `-p` or `-n` is no test, as in llama-bench), each at every `-d` depth.
    pub fn workloads(&self, declared: &[Workload]) -> Vec<Workload> {
        let given: Vec<Workload> = self
            .n_prompt
            .iter()
            .filter(|&&n| n > 0)
            .map(|&n| pp(n))
            .chain(self.n_gen.iter().filter(|&&n| n > 0).map(|&n| tg(n)))
            .chain(self.pg.iter().map(|&(p, g)| pp_tg(p, g)))
            .collect();
        let chosen = if self.n_prompt.is_empty() && self.n_gen.is_empty() && self.pg.is_empty() {
            declared.to_vec()
        } else {
            given
        };
        if self.depth.is_empty() {
            return chosen;
        }
        let mut out = Vec::new();
        for w in chosen {
            for &d in &self.depth {
                let at = w.at_depth(d);
                if !out.contains(&at) {
                    out.push(at);
                }
            }
        }
        out
    }

    /// The sweep with every axis the command line gave replaced.
    pub fn sweep(&self, declared: &Sweep) -> Sweep {
        fn replace<T: Clone>(axis: &mut Vec<T>, given: &[T]) {
            if !given.is_empty() {
                *axis = given.to_vec();
            }
        }
        let mut s = declared.clone();
        replace(&mut s.threads, &self.threads);
        replace(&mut s.n_batch, &self.n_batch);
        replace(&mut s.n_ubatch, &self.n_ubatch);
        replace(&mut s.flash_attn, &self.flash_attn);
        replace(&mut s.n_gpu_layers, &self.n_gpu_layers);
        if !self.type_k.is_empty() {
            s.type_k = leaked(&self.type_k);
        }
        if !self.type_v.is_empty() {
            s.type_v = leaked(&self.type_v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges_read_as_llama_bench_reads_them() {
        let v = |s: &str| usizes(s).map(|List(v)| v);
        assert_eq!(v("1,2,4").unwrap(), [1, 2, 4]);
        assert_eq!(v("1-4").unwrap(), [1, 2, 3, 4]);
        assert_eq!(v("1-8+3").unwrap(), [1, 4, 7]);
        assert_eq!(v("1-16*2").unwrap(), [1, 2, 4, 8, 16]);
        assert_eq!(v("0,512-1024*2").unwrap(), [0, 512, 1024]);
        for bad in [
            "", "x", "1,,2", "4-1", "1-8+0", "1-8*1", "1-8*0", "-3", "1-", "1.5",
        ] {
            assert!(v(bad).is_err(), "{bad}");
        }
        assert!(positive_usizes("0,1").is_err());
        assert!(u32s("5000000000").is_err());
        assert_eq!(pair("512, 128").unwrap(), (512, 128));
        assert!(pair("512").is_err());
        assert_eq!(
            flash_attn("0,1,auto").unwrap().0,
            [FlashAttn::Off, FlashAttn::On, FlashAttn::Auto]
        );
        assert!(flash_attn("2").is_err());
        assert!(names("f16,").is_err());
    }

    #[test]
    fn multi_letter_flags_are_spelt_long() {
        let args = [
            "-pg", "512,128", "-ub=256", "-t", "2", "-ctk", "q8_0", "-pgx", "-fa",
        ];
        let long = long_forms(args.iter().map(|s| s.to_string()));
        assert_eq!(
            long,
            [
                "--pg",
                "512,128",
                "--ubatch-size=256",
                "-t",
                "2",
                "--cache-type-k",
                "q8_0",
                "-pgx",
                "--flash-attn"
            ]
        );
    }

    #[test]
    fn given_axes_replace_declared_ones_and_depth_multiplies_workloads() {
        let declared = [pp(512), tg(128)];
        let none = SweepArgs::default();
        assert_eq!(none.workloads(&declared), declared);
        let p = SweepArgs {
            n_prompt: vec![0, 64],
            n_gen: vec![16],
            pg: vec![(32, 8)],
            ..SweepArgs::default()
        };
        assert_eq!(p.workloads(&declared), [pp(64), tg(16), pp_tg(32, 8)]);
        let d = SweepArgs {
            depth: vec![0, 512],
            ..SweepArgs::default()
        };
        assert_eq!(
            d.workloads(&declared),
            [
                pp(512),
                pp(512).at_depth(512),
                tg(128),
                tg(128).at_depth(512)
            ]
        );
        let s = SweepArgs {
            threads: vec![1, 2],
            type_k: vec!["q8_0".into()],
            ..SweepArgs::default()
        };
        let declared = Sweep {
            threads: vec![4],
            n_ubatch: vec![256],
            ..Sweep::default()
        };
        let swept = s.sweep(&declared);
        assert_eq!(swept.threads, [1, 2]);
        assert_eq!(swept.n_ubatch, [256]);
        assert_eq!(swept.type_k, ["q8_0"]);
    }
}
