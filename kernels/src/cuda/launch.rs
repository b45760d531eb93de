//! Kernel launches with programmatic dependent launch (PDL, sm_90 and later).
//!
//! A decode step is a chain of a few hundred short kernels, each reading what the one before it
//! wrote. Launched plainly, each kernel starts only when its predecessor has drained, so every
//! boundary costs a launch, a ramp and a tail. Launched with programmatic stream serialization,
//! a kernel's blocks may be scheduled while its predecessor still runs: they load what does not
//! depend on it (weights) and then wait in `griddepcontrol.wait` (common.cuh, `pdl_enter`),
//! which returns once the predecessor has finished and its writes are visible. While a CUDA
//! graph is captured, capture_links.rs picks the edges that carry this into the graph.
//!
//! cudarc's launch builder cannot set launch attributes, so this is its twin over
//! `cuLaunchKernelEx`: the same `arg` calls, the same `launch(cfg)`. On cards before sm_90, with
//! PTX built for them, or with `NANOHOST_PDL=0` (read once; for A/B runs), kernels are launched
//! without the attribute and `griddepcontrol` compiles to nothing.

use candle_core::cuda_backend::cudarc::driver::sys::{
    self, CUdevice_attribute, CUlaunchAttributeID,
};
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, LaunchConfig,
    PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use std::ffi::c_void;
use std::sync::OnceLock;

/// The compute capability nanohost.cu was compiled for (build.rs: CUDA_COMPUTE_CAP).
const PTX_COMPUTE_CAP: &str = env!("NANOHOST_PTX_COMPUTE_CAP");

/// Whether the kernels' sm_90 parts exist and can run: PTX built for sm_90 or later, on a device
/// of compute capability 9 or later (asked once; one model runs on one GPU).
pub(crate) fn sm90(stream: &CudaStream) -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let built = PTX_COMPUTE_CAP.parse::<u32>().is_ok_and(|cap| cap >= 90);
        let major = stream
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .unwrap_or(0);
        built && major >= 9
    })
}

/// Whether launches carry the PDL attribute: [`sm90`] (so the kernels wait), and `NANOHOST_PDL`
/// not `0`.
pub(crate) fn pdl_enabled(stream: &CudaStream) -> bool {
    static ASKED: OnceLock<bool> = OnceLock::new();
    sm90(stream) && crate::knob::switch(&ASKED, "NANOHOST_PDL", true)
}

/// One launch being assembled: each argument in an 8-byte slot (every kernel argument of
/// nanohost.cu is a device pointer or a scalar of at most 8 bytes).
pub(crate) struct Launch<'a> {
    stream: &'a CudaStream,
    func: &'a CudaFunction,
    slots: Vec<u64>,
    cluster: Option<u32>,
}

impl<'a> Launch<'a> {
    pub(crate) fn new(stream: &'a CudaStream, func: &'a CudaFunction) -> Self {
        Launch {
            stream,
            func,
            slots: Vec::with_capacity(32),
            cluster: None,
        }
    }

    /// Groups the grid's blocks into clusters of `x` along x (sm_90 and later: the blocks of a
    /// cluster run at once and read each other's shared memory). The grid's x must be a
    /// multiple of it.
    pub(crate) fn cluster_x(&mut self, x: u32) -> &mut Self {
        self.cluster = Some(x);
        self
    }

    fn push_ptr(&mut self, ptr: sys::CUdeviceptr) -> &mut Self {
        self.slots.push(ptr);
        self
    }

    /// While a graph is captured, the launch is first linked to the kernel before it by a
    /// programmatic edge (capture_links.rs).
    ///
    /// # Safety
    /// As cudarc's `LaunchArgs::launch`: the arguments must match the kernel's parameters, and
    /// the kernel must stay inside the buffers it is given.
    pub(crate) unsafe fn launch(&mut self, cfg: LaunchConfig) -> candle_core::Result<()> {
        let mut params: Vec<*mut c_void> = self
            .slots
            .iter_mut()
            .map(|s| s as *mut u64 as *mut c_void)
            .collect();
        let pdl = pdl_enabled(self.stream);
        let mut attrs: [sys::CUlaunchAttribute; 2] = std::mem::zeroed();
        let mut count = 0;
        if pdl {
            attrs[count].id =
                CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attrs[count].value.programmaticStreamSerializationAllowed = 1;
            count += 1;
        }
        if let Some(x) = self.cluster {
            attrs[count].id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
            attrs[count].value.clusterDim.x = x;
            attrs[count].value.clusterDim.y = 1;
            attrs[count].value.clusterDim.z = 1;
            count += 1;
        }
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: if count > 0 {
                attrs.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            },
            numAttrs: count as u32,
        };
        self.stream.context().bind_to_thread().w()?;
        if pdl {
            super::capture_links::link_before_launch(self.stream)?;
        }
        sys::cuLaunchKernelEx(
            &config,
            self.func.cu_function(),
            params.as_mut_ptr(),
            std::ptr::null_mut(),
        )
        .result()
        .w()?;
        if pdl {
            super::capture_links::remember_launch(self.stream)?;
        }
        Ok(())
    }
}

/// Scalars, by value: copied into their slot (so nothing must outlive the builder).
macro_rules! scalar_arg {
    ($($t:ty),*) => {$(
        // SAFETY: the value's bytes (at most 8) are copied into an 8-byte slot.
        unsafe impl<'a, 'b> PushKernelArg<&'b $t> for Launch<'a> {
            fn arg(&mut self, arg: &'b $t) -> &mut Self {
                let mut slot = 0u64;
                unsafe { std::ptr::copy_nonoverlapping(arg as *const $t as *const u8, &mut slot as *mut u64 as *mut u8, std::mem::size_of::<$t>()) };
                self.slots.push(slot);
                self
            }
        }
    )*};
}
scalar_arg!(u32, u64, i32, f32, f64);

// Device buffers, as their device pointers (as cudarc passes them).
// SAFETY: a device pointer is what the kernel's pointer parameter takes.
unsafe impl<'a, 'b, T> PushKernelArg<&'b CudaSlice<T>> for Launch<'a> {
    fn arg(&mut self, arg: &'b CudaSlice<T>) -> &mut Self {
        let (ptr, _sync) = arg.device_ptr(self.stream);
        self.push_ptr(ptr)
    }
}

// SAFETY: as above.
unsafe impl<'a, 'b, 'c, T> PushKernelArg<&'b CudaView<'c, T>> for Launch<'a> {
    fn arg(&mut self, arg: &'b CudaView<'c, T>) -> &mut Self {
        let (ptr, _sync) = arg.device_ptr(self.stream);
        self.push_ptr(ptr)
    }
}

// SAFETY: as above.
unsafe impl<'a, 'b, 'c, T> PushKernelArg<&'b mut CudaViewMut<'c, T>> for Launch<'a> {
    fn arg(&mut self, arg: &'b mut CudaViewMut<'c, T>) -> &mut Self {
        let (ptr, _sync) = arg.device_ptr(self.stream);
        self.push_ptr(ptr)
    }
}
