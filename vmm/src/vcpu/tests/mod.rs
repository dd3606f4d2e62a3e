// Copyright 2026 The ft-cloud-hypervisor authors.
// SPDX-License-Identifier: Apache-2.0

//! Unit tests of the vCPU loop's decisions, driven by a scripted vCPU.

mod harness;
mod modes;
mod pair;
mod record_replay;
mod scripted;
