//! CPU lists (`1`, `0,1`, `0-3`) and pinning the calling thread to one CPU with
//! `sched_setaffinity`.

/// A CPU list that cannot be parsed or a CPU the thread cannot run on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AffinityError {
    #[error("bad CPU list {0:?}: use e.g. 1, 0,1 or 0-3")]
    BadList(String),
    #[error("CPU {0} is listed twice")]
    Duplicate(usize),
    #[error("cannot pin to CPU {cpu}: {reason}")]
    Pin { cpu: usize, reason: String },
}

/// Parses a comma-separated list of CPUs and inclusive ranges, keeping the order given.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, AffinityError> {
    let bad = || AffinityError::BadList(s.to_string());
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(bad());
        }
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => {
                (a.trim().parse::<usize>().map_err(|_| bad())?, b.trim().parse::<usize>().map_err(|_| bad())?)
            }
            None => {
                let c = part.parse::<usize>().map_err(|_| bad())?;
                (c, c)
            }
        };
        if lo > hi || hi >= libc::CPU_SETSIZE as usize {
            return Err(bad());
        }
        for c in lo..=hi {
            if out.contains(&c) {
                return Err(AffinityError::Duplicate(c));
            }
            out.push(c);
        }
    }
    Ok(out)
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> Result<(), AffinityError> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(AffinityError::Pin { cpu, reason: "beyond CPU_SETSIZE".into() });
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it (cpu checked
    // above), and sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes from it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(AffinityError::Pin { cpu, reason: std::io::Error::last_os_error().to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_ranges() {
        assert_eq!(parse_cpu_list("1"), Ok(vec![1]));
        assert_eq!(parse_cpu_list("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_cpu_list("2-4,0"), Ok(vec![2, 3, 4, 0]));
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("1,").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
        assert_eq!(parse_cpu_list("1,0-2"), Err(AffinityError::Duplicate(1)));
    }

    #[test]
    fn pins_to_cpu_zero() {
        std::thread::spawn(|| pin_current_thread(0)).join().expect("thread ran").expect("CPU 0 exists");
    }
}
