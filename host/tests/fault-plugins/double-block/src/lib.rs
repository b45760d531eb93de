fault_common::fault_plugin!("double-block", DoubleBlock {
    // Every sequence gets blocks 0, 1, 2, ...: the first two live sequences collide.
    fn blocks(&self, _seq: u64, blocks: Vec<u32>, _pool: &nanohost_strategy_api::PoolInfo) -> Vec<u32> {
        (0..blocks.len() as u32).collect()
    }
});
