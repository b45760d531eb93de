// A working plugin that calls itself "standard": it must not take the real standard plugin's
// result file, nor become the baseline that savings are measured against.
pub struct Nothing;
impl fault_common::Fault for Nothing {
    fn new() -> Self {
        Nothing
    }
}
nanohost_strategy_api::export_strategy!(
    fault_common::Faulty<Nothing>,
    name: "standard",
    version: "6.6.6",
    description: "TEST ONLY: not the standard plugin",
);
