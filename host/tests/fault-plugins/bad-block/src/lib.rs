fault_common::fault_plugin!("bad-block", BadBlock {
    fn blocks(&self, _seq: u64, mut blocks: Vec<u32>, pool: &nanohost_strategy_api::PoolInfo) -> Vec<u32> {
        blocks[0] = pool.num_blocks + 5;
        blocks
    }
});
