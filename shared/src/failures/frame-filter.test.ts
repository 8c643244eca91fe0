// Frame parsing across architectures and the guilty-frame rules.
import { test } from "uvu";
import * as assert from "uvu/assert";
import {
  canonicalFrame,
  hungTaskFrame,
  makeSkipper,
  parseFrameLine,
  ripFrameName,
  stallFrame,
  syscallFrameName,
} from "./frame-filter.js";

test("frame lines of x86, arm64, powerpc, arm and kmemleak", () => {
  assert.equal(parseFrameLine(" tcp_close+0x25/0x80"), { name: "tcp_close", questionable: false });
  assert.equal(parseFrameLine(" ? rescuer_thread+0x3a0/0x3a0"), {
    name: "rescuer_thread",
    questionable: true,
  });
  assert.equal(parseFrameLine(" [<ffffffff818a4d09>] rfkill_fop_read+0xf9/0x1c0"), {
    name: "rfkill_fop_read",
    questionable: false,
  });
  assert.equal(parseFrameLine(" scsi_execute_cmd+0x77/0x250 [scsi_mod]")?.name, "scsi_execute_cmd");
  assert.equal(parseFrameLine("  __switch_to+0x2b0/0x6e0 (T)")?.name, "__switch_to");
  assert.equal(parseFrameLine("[c0000000fb2d7b40] [c000000000166e5c] foo_bar+0x4c/0x90 (unreliable)"), {
    name: "foo_bar",
    questionable: true,
  });
  assert.equal(parseFrameLine("[<808ea9f4>] (gsmld_receive_buf) from [<808dcfac>] (tty_ioctl+0x7b4/0xa6c)"), {
    name: "gsmld_receive_buf",
    questionable: false,
    caller: "tty_ioctl",
  });
  assert.equal(
    parseFrameLine("    [<000000003ee1ab5b>] __kmalloc+0x176/0x2d0 mm/slab.c:3718")?.name,
    "__kmalloc",
  );
  // Symbolizer-inlined frames carry no offset; register dumps are not frames.
  assert.is(parseFrameLine(" read_mapping_folio include/linux/pagemap.h:999 [inline]"), null);
  assert.is(parseFrameLine("RAX: 0000000000000000 RBX: ffff9a2b81234000"), null);
});

test("compiler suffixes are dropped", () => {
  assert.is(canonicalFrame("do_ipv6_setsockopt.isra.8"), "do_ipv6_setsockopt");
  assert.is(canonicalFrame("pn533_send_complete.cold"), "pn533_send_complete");
  assert.is(parseFrameLine(" ext4_do_update_inode.isra.0+0x3bc/0x620 [ext4]")?.name, "ext4_do_update_inode");
});

test("RIP/pc lines name the faulting function; user-mode ones name none", () => {
  assert.is(
    ripFrameName("RIP: 0010:virtio_gpu_dequeue_ctrl_func+0x71/0x250 [virtio_gpu]"),
    "virtio_gpu_dequeue_ctrl_func",
  );
  assert.is(
    ripFrameName("RIP: 0010:[<ffffffff8160fc09>]  [<ffffffff8160fc09>] change_mnt_propagation+0xa9/0xbd0"),
    "change_mnt_propagation",
  );
  assert.is(ripFrameName("IP: [<ffffffff810a376f>] __call_rcu.constprop.76+0x1f/0x280"), "__call_rcu");
  assert.is(ripFrameName("pc : __lock_acquire+0x7cc/0x30a4"), "__lock_acquire");
  assert.is(ripFrameName("PC is at memset+0x30/0xa8"), "memset");
  assert.is(ripFrameName("RIP: 0033:0x7f01b7b884f9"), null);
  assert.is(ripFrameName("PC is at 0x0"), null);
});

test("skip patterns match at the start of a name or after `_`", () => {
  const skip = makeSkipper();
  for (const helper of [
    "__down_write",
    "_raw_spin_lock_irqsave",
    "kasan_report",
    "dump_stack_lvl",
    "__might_sleep",
    "memcpy",
    "rb_erase",
  ])
    assert.ok(skip(helper), helper);
  for (const real of [
    "l2cap_sock_teardown_cb",
    "pn533_send_complete",
    "rtnl_lock",
    "ext4_find_entry",
    "tcp_close",
  ])
    assert.not.ok(skip(real), real);
  // Helpers from syzkaller's own skip list: lock takers, MMIO accessors, page-cache and slab
  // internals, timers and SRCU teardown stand for their caller.
  for (const helper of [
    "raw_spin_rq_unlock_irq",
    "reiserfs_write_lock",
    "logic_inb",
    "__raw_readl",
    "find_lock_entries",
    "do_read_cache_folio",
    "cleanup_srcu_struct",
    "__mod_timer",
    "__wake_up_common",
  ])
    assert.ok(skip(helper), helper);
  assert.not.ok(skip("wake_up_new_task"), "wake_up_new_task");
  const extra = makeSkipper(["refcount"]);
  assert.ok(extra("refcount_warn_saturate"));
  assert.not.ok(skip("refcount_warn_saturate"));
});

test("stalls: the callee of the first entry-point anchor, syscall wrappers renamed", () => {
  assert.is(
    stallFrame([
      "d_walk",
      "shrink_dcache_parent",
      "vfs_rmdir",
      "do_rmdir",
      "__x64_sys_rmdir",
      "do_syscall_64",
    ]),
    "sys_rmdir",
  );
  assert.is(stallFrame(["umount_tree", "do_mount", "compat_SyS_mount", "do_fast_syscall_32"]), "mount");
  assert.is(stallFrame(["ip6_input", "ipv6_rcv", "__netif_receive_skb_core", "process_backlog"]), "ipv6_rcv");
  assert.is(stallFrame(["kvm_vcpu_ioctl", "do_vfs_ioctl", "ksys_ioctl"]), "kvm_vcpu_ioctl");
  assert.is(stallFrame(["smp_call_function_many", "on_each_cpu"]), "smp_call_function");
  assert.is(stallFrame(["a", "b"]), null);
  assert.is(syscallFrameName("__arm64_sys_openat"), "sys_openat");
  assert.is(syscallFrameName("SyS_pause"), "pause");
  assert.is(syscallFrameName("tcp_close"), "tcp_close");
});

test("hung tasks: rtnl_lock and synchronize_* buckets, else the first non-waiting frame", () => {
  assert.is(
    hungTaskFrame(["__schedule", "schedule", "__mutex_lock", "rtnl_lock", "register_netdevice_notifier"]),
    "rtnl_lock",
  );
  assert.is(
    hungTaskFrame(["__schedule", "wait_for_completion", "__synchronize_srcu", "synchronize_srcu"]),
    "synchronize_rcu",
  );
  assert.is(
    hungTaskFrame(["__schedule", "schedule", "io_schedule", "folio_wait_bit_common", "blk_mq_get_tag"]),
    "blk_mq_get_tag",
  );
  // rcu_barrier waits like synchronize_rcu but is not bucketed: the frame that called it names it.
  assert.is(hungTaskFrame(["__schedule", "schedule", "rcu_barrier", "netdev_run_todo"]), "netdev_run_todo");
});

test.run();
