//! `tuned_matmul` on the GPU: cuBLASLt with the algorithm measured fastest for each shape on
//! first use, from the candidates its heuristic offers, instead of the heuristic's first pick.
//!
//! Decode's projections of 17-64 rows stream the weight, and cuBLAS's first pick for Qwen3's
//! o_proj and down_proj at 64 rows (1024 outputs) streamed them at 0.77-0.88 TB/s on an H200
//! (results/gpu-h200-2026-11-28-tc-matmul/, bench-chain): tiles of 8 rows of x re-read each
//! weight tile eight times. Each candidate is timed on a rotation of weight-sized buffers that
//! no L2 holds at once, as a decode step meets its weights.

use super::capture_links::capturing;
use crate::elem::contiguous_range;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublaslt::{result as lt, sys};
use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Candidates the heuristic is asked for.
const CANDIDATES: usize = 16;
/// Workspace for split-k candidates: NVIDIA's advice for Hopper.
const WORKSPACE: usize = 32 << 20;
/// Bytes of weight copies a candidate's timing rotates through: more than an H200's L2 (50 MB).
const ROTATION_BYTES: usize = 128 << 20;

/// One shape's descriptors and the algorithm measured fastest.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    layouts: [sys::cublasLtMatrixLayout_t; 3],
    algo: sys::cublasLtMatmulAlgo_t,
}

/// A handle and workspace per device, and the plans by (device, dtype, rows, n, k).
struct Tuner {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: HashMap<(usize, DType, usize, usize, usize), Plan>,
}

// SAFETY: the raw cuBLASLt objects are used only under the mutex that holds them.
unsafe impl Send for Tuner {}

type Tuners = Mutex<HashMap<usize, Tuner>>;

fn tuners() -> &'static Tuners {
    static T: OnceLock<Tuners> = OnceLock::new();
    T.get_or_init(Default::default)
}

fn data_type(dtype: DType) -> Result<sys::cudaDataType_t> {
    Ok(match dtype {
        DType::BF16 => sys::cudaDataType_t::CUDA_R_16BF,
        DType::F16 => sys::cudaDataType_t::CUDA_R_16F,
        other => return Err(crate::elem::unsupported("tuned_matmul", other)),
    })
}

fn lt_err(e: lt::CublasError) -> candle_core::Error {
    candle_core::Error::Msg(format!("tuned_matmul (cuBLASLt): {e:?}"))
}

impl Plan {
    /// Column-major, as cuBLAS sees row-major data: out^T [n, rows] = W^T' [n, k] . x^T [k, rows],
    /// the weight [k, n] column-major taken transposed; f32 accumulation and scalars.
    fn describe(
        dtype: DType,
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<(sys::cublasLtMatmulDesc_t, [sys::cublasLtMatrixLayout_t; 3])> {
        let t = data_type(dtype)?;
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType_t::CUDA_R_32F,
        )
        .map_err(lt_err)?;
        let op_t = candle_core::cuda_backend::cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T;
        // SAFETY: a live descriptor, and an attribute of the type it names.
        unsafe {
            lt::set_matmul_desc_attribute(
                desc,
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                &op_t as *const _ as *const c_void,
                std::mem::size_of_val(&op_t),
            )
        }
        .map_err(lt_err)?;
        let layout = |r: usize, c: usize, ld: usize| {
            lt::create_matrix_layout(t, r as u64, c as u64, ld as i64).map_err(lt_err)
        };
        Ok((
            desc,
            [layout(k, n, k)?, layout(k, rows, k)?, layout(n, rows, n)?],
        ))
    }

    /// Launches `out = x w^T` with `algo` on `stream`.
    ///
    /// # Safety
    /// `w`, `x` and `out` point at [n, k], [rows, k] and [rows, n] elements of the plan's type,
    /// and `workspace` at `workspace_bytes` of device memory, all usable on `stream`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn launch(
        handle: sys::cublasLtHandle_t,
        desc: sys::cublasLtMatmulDesc_t,
        layouts: &[sys::cublasLtMatrixLayout_t; 3],
        algo: &sys::cublasLtMatmulAlgo_t,
        w: u64,
        x: u64,
        out: u64,
        workspace: u64,
        workspace_bytes: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        let (alpha, beta) = (1f32, 0f32);
        let [a, b, c] = *layouts;
        lt::matmul(
            handle,
            desc,
            &alpha as *const f32 as *const c_void,
            &beta as *const f32 as *const c_void,
            w as *const c_void,
            a,
            x as *const c_void,
            b,
            out as *const c_void,
            c,
            out as *mut c_void,
            c,
            algo,
            workspace as *mut c_void,
            workspace_bytes,
            stream.cu_stream() as sys::cudaStream_t,
        )
        .map_err(lt_err)
    }
}

impl Tuner {
    fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let handle = lt::create_handle().map_err(lt_err)?;
        // SAFETY: scratch that cuBLASLt alone writes.
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE) }.w()?;
        Ok(Tuner {
            handle,
            workspace,
            plans: HashMap::new(),
        })
    }

    /// The shape's plan: the heuristic's candidates, each timed on `x` against a rotation of
    /// zeroed weight copies, the fastest kept.
    fn tune(
        &self,
        stream: &Arc<CudaStream>,
        dtype: DType,
        x: u64,
        rows: usize,
        n: usize,
        k: usize,
    ) -> Result<Plan> {
        let (desc, layouts) = Plan::describe(dtype, rows, n, k)?;
        let pref = lt::create_matmul_pref().map_err(lt_err)?;
        let ws = WORKSPACE as u64;
        // SAFETY: live objects; the attribute is the u64 it names.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &ws as *const u64 as *const c_void,
                8,
            )
        }
        .map_err(lt_err)?;
        // SAFETY: plain data the call fills; `count` says how many.
        let mut found: [sys::cublasLtMatmulHeuristicResult_t; CANDIDATES] =
            unsafe { std::mem::zeroed() };
        let mut count = 0;
        let [a, b, c] = layouts;
        // SAFETY: live descriptors and a results array of CANDIDATES entries.
        let status = unsafe {
            sys::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                desc,
                a,
                b,
                c,
                c,
                pref,
                CANDIDATES as i32,
                found.as_mut_ptr(),
                &mut count,
            )
        };
        // SAFETY: created above, used no more.
        unsafe { lt::destroy_matmul_pref(pref) }.map_err(lt_err)?;
        status.result().map_err(lt_err)?;
        let elem = dtype.size_in_bytes();
        let copies = (ROTATION_BYTES / (n * k * elem)).clamp(2, 32);
        let weights = stream.alloc_zeros::<u8>(copies * n * k * elem).w()?;
        let out = stream.alloc_zeros::<u8>(rows * n * elem).w()?;
        let ((wp, _gw), (op, _go), (sp, _gs)) = (
            weights.device_ptr(stream),
            out.device_ptr(stream),
            self.workspace.device_ptr(stream),
        );
        let ctx = stream.context();
        let (start, end) = (
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).w()?,
            ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).w()?,
        );
        let (mut best, mut first): (Option<(f32, usize)>, Option<f32>) = (None, None);
        for (i, cand) in found.iter().take(count.max(0) as usize).enumerate() {
            if cand.state != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS
                || cand.workspaceSize > WORKSPACE
            {
                continue;
            }
            let run = |reps: usize| -> Result<()> {
                for r in 0..reps {
                    let w = wp + ((r % copies) * n * k * elem) as u64;
                    // SAFETY: a weight copy, x, the scratch output and the workspace hold what
                    // the plan's shape needs.
                    unsafe {
                        Plan::launch(
                            self.handle,
                            desc,
                            &layouts,
                            &cand.algo,
                            w,
                            x,
                            op,
                            sp,
                            WORKSPACE,
                            stream,
                        )?
                    };
                }
                Ok(())
            };
            if run(copies).is_err() {
                continue; // a candidate the heuristic offers may still refuse these pointers
            }
            start.record(stream).w()?;
            run(4 * copies)?;
            end.record(stream).w()?;
            end.synchronize().w()?;
            let us = start.elapsed_ms(&end).w()? * 1e3 / (4 * copies) as f32;
            if i == 0 {
                first = Some(us);
            }
            if best.is_none_or(|(b, _)| us < b) {
                best = Some((us, i));
            }
        }
        let Some((us, i)) = best else {
            candle_core::bail!(
                "tuned_matmul: cuBLASLt offers no algorithm for {rows}x{k} . {n}x{k} ({dtype:?})"
            )
        };
        tracing::debug!(rows, n, k, candidate = i, of = count, us, first = ?first, "tuned_matmul: the fastest candidate (us a launch; the heuristic's first pick's)");
        Ok(Plan {
            desc,
            layouts,
            algo: found[i].algo,
        })
    }
}

/// Whether a plan for the shape exists, or can be made now (the stream is not capturing: the
/// timing synchronizes).
pub(crate) fn tuned_matmul_ready(
    dev: &CudaDevice,
    dtype: DType,
    rows: usize,
    n: usize,
    k: usize,
) -> Result<bool> {
    let stream = dev.cuda_stream();
    let key = (stream.context().ordinal(), dtype, rows, n, k);
    let tuned = tuners()
        .lock()
        .expect("tuner")
        .get(&key.0)
        .is_some_and(|t| t.plans.contains_key(&key));
    Ok(tuned || !capturing(&stream)?)
}

pub(crate) fn tuned_matmul(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let dev = x.device().clone();
    let stream = dev.cuda_stream();
    let (rows, k) = xl.shape().dims2()?;
    let n = wl.dims()[0];
    let ((x0, x1), (w0, w1)) = (
        contiguous_range(xl, "x")?,
        contiguous_range(wl, "the weight")?,
    );
    let dtype = x.dtype();
    let key = (stream.context().ordinal(), dtype, rows, n, k);
    let mut all = tuners().lock().expect("tuner");
    let tuner = match all.entry(key.0) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => e.insert(Tuner::new(&stream)?),
    };
    macro_rules! run {
        ($t:ty, $wrap:ident) => {{
            let (xs, ws) = (x.as_cuda_slice::<$t>()?.slice(x0..x1), w.as_cuda_slice::<$t>()?.slice(w0..w1));
            // SAFETY: cuBLASLt writes every element.
            let mut out = unsafe { super::alloc_out::<$t>(&dev, rows * n)? };
            {
                let ((xp, _gx), (wp, _gw)) = (xs.device_ptr(&stream), ws.device_ptr(&stream));
                if !tuner.plans.contains_key(&key) {
                    if capturing(&stream)? {
                        candle_core::bail!("tuned_matmul: {rows}x{k} . {n}x{k} met first while capturing a graph (tuned_matmul_ready)");
                    }
                    let plan = tuner.tune(&stream, dtype, xp, rows, n, k)?;
                    tuner.plans.insert(key, plan);
                }
                let plan = &tuner.plans[&key];
                let (op, _go) = out.device_ptr_mut(&stream);
                let (sp, _gs) = tuner.workspace.device_ptr(&stream);
                // SAFETY: x, w and out hold [rows, k], [n, k] and [rows, n] elements (contiguous
                // ranges of those shapes), the workspace WORKSPACE bytes.
                unsafe { Plan::launch(tuner.handle, plan.desc, &plan.layouts, &plan.algo, wp, xp, op, sp, WORKSPACE, &stream)? };
            }
            CudaStorageSlice::$wrap(out)
        }};
    }
    let slice = match dtype {
        DType::BF16 => run!(half::bf16, BF16),
        DType::F16 => run!(half::f16, F16),
        other => return Err(crate::elem::unsupported("tuned_matmul", other)),
    };
    Ok((CudaStorage { slice, device: dev }, Shape::from((rows, n))))
}
