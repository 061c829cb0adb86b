//! The CPU map: which CPU each shard's executor is pinned to. By default one shard per
//! physical core among the CPUs this process may run on (its affinity mask), ordered by
//! NUMA node then core, using hwloc (hwlocality) to know what a core is. With more
//! shards than cores, SMT siblings are used next; more shards than CPUs are refused.

use std::fmt;

use hwlocality::object::types::ObjectType;
use hwlocality::Topology;

/// Where one shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCpu {
    pub shard: usize,
    /// OS index of the CPU (processing unit) the executor is pinned to.
    pub cpu: usize,
    /// Logical index of the physical core that CPU belongs to.
    pub core: usize,
    /// NUMA node of that core.
    pub numa_node: usize,
}

impl fmt::Display for ShardCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {} -> cpu {} (core {}, numa node {})", self.shard, self.cpu, self.core, self.numa_node)
    }
}

/// A CPU the process may use, with its core and node.
#[derive(Debug, Clone, Copy)]
struct Pu {
    cpu: usize,
    core: usize,
    numa_node: usize,
    /// 0 for the first allowed PU of its core, 1 for its first SMT sibling, ...
    sibling_rank: usize,
}

/// CPUs in this process's affinity mask.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let max = libc::CPU_SETSIZE as usize;
    let cpus: Vec<usize> =
        if ok { (0..max).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect() } else { Vec::new() };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect()
    } else {
        cpus
    }
}

/// The allowed PUs grouped by core via hwloc, or one core per CPU if hwloc fails.
fn discover() -> Vec<Pu> {
    let allowed = allowed_cpus();
    let mut pus = Vec::new();
    if let Ok(topology) = Topology::new() {
        for core in topology.objects_with_type(ObjectType::Core) {
            let Some(cpuset) = core.cpuset() else {
                continue;
            };
            let numa_node = core.nodeset().and_then(|n| n.first_set()).map(usize::from).unwrap_or(0);
            let mut rank = 0;
            for idx in cpuset.iter_set() {
                let cpu = usize::from(idx);
                if allowed.contains(&cpu) {
                    pus.push(Pu { cpu, core: core.logical_index(), numa_node, sibling_rank: rank });
                    rank += 1;
                }
            }
        }
    }
    if pus.is_empty() {
        pus = allowed.iter().enumerate().map(|(i, &cpu)| Pu { cpu, core: i, numa_node: 0, sibling_rank: 0 }).collect();
    }
    // First PU of each core, NUMA-node-major; then SMT siblings in the same order.
    pus.sort_by_key(|p| (p.sibling_rank, p.numa_node, p.core, p.cpu));
    pus
}

/// Number of physical cores among the CPUs this process may use.
pub fn physical_cores() -> usize {
    discover().iter().filter(|p| p.sibling_rank == 0).count().max(1)
}

/// More shards were asked for than there are CPUs to pin them to.
#[derive(Debug, thiserror::Error)]
#[error("-t {shards}: this process may run on only {cpus} CPUs, and each shard needs its own")]
pub struct TooManyShards {
    pub shards: usize,
    pub cpus: usize,
}

/// The CPU map for `shards` shards: first one per physical core, then SMT siblings.
/// Refuses more shards than CPUs this process may run on: two busy-polling executors
/// pinned to one CPU would starve each other.
pub fn plan(shards: usize) -> Result<Vec<ShardCpu>, TooManyShards> {
    let pus = discover();
    if shards > pus.len() {
        return Err(TooManyShards { shards, cpus: pus.len() });
    }
    Ok((0..shards.max(1))
        .map(|shard| {
            let pu = pus[shard];
            ShardCpu { shard, cpu: pu.cpu, core: pu.core, numa_node: pu.numa_node }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_per_core_on_distinct_cpus() {
        let plan = plan(physical_cores()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plan.len(), physical_cores());
        let mut cpus: Vec<usize> = plan.iter().map(|s| s.cpu).collect();
        cpus.sort_unstable();
        cpus.dedup();
        assert_eq!(cpus.len(), plan.len(), "each shard on its own CPU: {plan:?}");
        for cpu in &cpus {
            assert!(allowed_cpus().contains(cpu));
        }
    }

    #[test]
    fn more_shards_than_cpus_are_refused() {
        let cpus = allowed_cpus().len();
        assert_eq!(plan(cpus).map(|p| p.len()).ok(), Some(cpus));
        let refused = plan(cpus + 1).map(|p| p.len());
        assert!(
            matches!(refused, Err(TooManyShards { shards, cpus: c }) if shards == cpus + 1 && c == cpus),
            "{refused:?}"
        );
        assert!(plan(1000).is_err());
    }
}
