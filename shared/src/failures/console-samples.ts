// Sample console reports for tests and the benchmark, written in the format of a Debian 12
// (6.1) guest kernel unless noted. Bodies carry no timestamp; stampConsole() adds the
// `[ 123.456789][ T123] ` prefix a real serial console has.

export const SAMPLE_REPORTS = {
  hungTask: `INFO: task kworker/0:1:12 blocked for more than 10 seconds.
      Not tainted 6.1.0-18-amd64 #1 Debian 6.1.76-1
"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
task:kworker/0:1     state:D stack:0     pid:12    ppid:2      flags:0x00004000
Workqueue: events_freezable_power_ disk_events_workfn
Call Trace:
 <TASK>
 __schedule+0x34d/0x9e0
 schedule+0x5a/0xd0
 io_schedule+0x42/0x70
 blk_mq_get_tag+0x10e/0x290
 ? cpuacct_percpu_seq_show+0x20/0x20
 __blk_mq_alloc_requests+0x17e/0x300
 blk_mq_alloc_request+0x88/0xd0
 scsi_execute_cmd+0x77/0x250 [scsi_mod]
 scsi_test_unit_ready+0x77/0x100 [scsi_mod]
 sd_check_events+0x11a/0x170 [sd_mod]
 disk_check_events+0x3a/0x100
 process_one_work+0x1c7/0x380
 worker_thread+0x4d/0x380
 ? rescuer_thread+0x3a0/0x3a0
 kthread+0xda/0x100
 ? kthread_complete_and_exit+0x20/0x20
 ret_from_fork+0x22/0x30
 </TASK>`,

  softLockup: `watchdog: BUG: soft lockup - CPU#3 stuck for 26s! [stress-ng-cpu:2345]
Modules linked in: nls_ascii nls_cp437 vfat fat virtio_net net_failover failover
CPU: 3 PID: 2345 Comm: stress-ng-cpu Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1
Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
RIP: 0010:crc32c_pcl_intel_update+0x6d/0x120 [crc32c_intel]
Code: 48 8b 05 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff
RSP: 0018:ffffb1a5c0b8fe38 EFLAGS: 00000246
RAX: 0000000000000000 RBX: ffff9a2b81234000 RCX: 0000000000000001
Call Trace:
 <IRQ>
 ? watchdog_timer_fn+0x1c8/0x220
 ? __hrtimer_run_queues+0x112/0x2b0
 ? hrtimer_interrupt+0xf4/0x210
 ? __sysvec_apic_timer_interrupt+0x5d/0x110
 ? sysvec_apic_timer_interrupt+0x69/0x90
 </IRQ>
 <TASK>
 crypto_shash_update+0x1a/0x30
 ext4_inode_csum+0x12d/0x230 [ext4]
 ext4_do_update_inode.isra.0+0x3bc/0x620 [ext4]
 ext4_mark_iloc_dirty+0x5c/0x90 [ext4]
 ext4_dirty_inode+0x5c/0x80 [ext4]
 __mark_inode_dirty+0x51/0x350
 generic_update_time+0x6c/0xd0
 file_update_time+0x9f/0xb0
 ext4_buffered_write_iter+0x5a/0x180 [ext4]
 vfs_write+0x239/0x3f0
 ksys_write+0x6f/0xf0
 do_syscall_64+0x58/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
 </TASK>`,

  nullDerefPanic: `BUG: kernel NULL pointer dereference, address: 0000000000000008
#PF: supervisor read access in kernel mode
#PF: error_code(0x0000) - not-present page
PGD 0 P4D 0
Oops: 0000 [#1] PREEMPT SMP NOPTI
CPU: 2 PID: 987 Comm: kworker/2:3 Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1
Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
Workqueue: events virtio_gpu_dequeue_ctrl_func [virtio_gpu]
RIP: 0010:virtio_gpu_dequeue_ctrl_func+0x71/0x250 [virtio_gpu]
Code: 00 00 48 8b 45 00 48 8d 58 f0 48 39 c5 74 2c 48 8b 43 08
RSP: 0018:ffffb1a5c0b8fe38 EFLAGS: 00010246
RAX: 0000000000000000 RBX: ffff9a2b81234000 RCX: 0000000000000001
Call Trace:
 <TASK>
 process_one_work+0x1c7/0x380
 worker_thread+0x4d/0x380
 ? rescuer_thread+0x3a0/0x3a0
 kthread+0xda/0x100
 ? kthread_complete_and_exit+0x20/0x20
 ret_from_fork+0x22/0x30
 </TASK>
Modules linked in: virtio_gpu virtio_dma_buf drm_shmem_helper
CR2: 0000000000000008
---[ end trace 0000000000000000 ]---
RIP: 0010:virtio_gpu_dequeue_ctrl_func+0x71/0x250 [virtio_gpu]
Kernel panic - not syncing: Fatal exception
Kernel Offset: 0x1c00000 from 0xffffffff81000000 (relocation range: 0xffffffff80000000-0xffffffffbfffffff)
---[ end Kernel panic - not syncing: Fatal exception ]---`,

  warning: `------------[ cut here ]------------
WARNING: CPU: 1 PID: 4411 at fs/ext4/inode.c:3821 ext4_set_page_dirty+0x3a/0x50 [ext4]
Modules linked in: ext4 crc16 mbcache jbd2
CPU: 1 PID: 4411 Comm: postgres Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1
RIP: 0010:ext4_set_page_dirty+0x3a/0x50 [ext4]
Call Trace:
 <TASK>
 folio_mark_dirty+0x2b/0x60
 set_page_dirty_lock+0x3f/0x60
 unpin_user_pages_dirty_lock+0xc0/0x140
 process_vm_rw_core.constprop.0+0x38c/0x4f0
 __x64_sys_process_vm_writev+0x25/0x30
 do_syscall_64+0x58/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
 </TASK>
---[ end trace 0000000000000000 ]---`,

  generalProtectionFault: `general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] PREEMPT SMP NOPTI
CPU: 0 PID: 7731 Comm: nginx Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1
RIP: 0010:__list_del_entry_valid+0x2e/0x90
RSP: 0018:ffffb1a5c0b8fe38 EFLAGS: 00010246
Call Trace:
 <TASK>
 tcp_v4_destroy_sock+0x9b/0x1e0
 inet_csk_destroy_sock+0x53/0x130
 tcp_close+0x25/0x80
 inet_release+0x3c/0x80
 __sock_release+0x3d/0xa0
 sock_close+0x11/0x20
 __fput+0x91/0x250
 task_work_run+0x59/0x90
 exit_to_user_mode_prepare+0x1c1/0x1d0
 syscall_exit_to_user_mode+0x17/0x40
 do_syscall_64+0x67/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
 </TASK>
---[ end trace 0000000000000000 ]---`,

  oomKill: `stress-ng invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=1000
CPU: 1 PID: 4242 Comm: stress-ng Not tainted 6.1.0-18-amd64 #1  Debian 6.1.76-1
Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
Call Trace:
 <TASK>
 dump_stack_lvl+0x44/0x5c
 dump_header+0x4a/0x211
 oom_kill_process.cold+0xb/0x10
 out_of_memory+0x1fd/0x4c0
 __alloc_pages_slowpath.constprop.0+0xc93/0xe00
 __alloc_pages+0x305/0x330
 </TASK>
Mem-Info:
active_anon:1021 inactive_anon:480021 isolated_anon:0
Tasks state (memory values in pages):
[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
[   4321]   105  4321   586419   308641  3538944        0             0 postgres
oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/postgresql.service,task=postgres,pid=4321,uid=105
Out of memory: Killed process 4321 (postgres) total-vm:2345676kB, anon-rss:1234564kB, file-rss:0kB, shmem-rss:0kB, UID:105 pgtables:3456kB oom_score_adj:0
oom_reaper: reaped process 4321 (postgres), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB`,

  oomDeadlock: `kworker/u8:2 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
Mem-Info:
Out of memory and no killable processes...
Kernel panic - not syncing: System is deadlocked on memory
Kernel Offset: disabled
---[ end Kernel panic - not syncing: System is deadlocked on memory ]---`,

  ioErrors: `blk_update_request: I/O error, dev vda, sector 123456 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0
Buffer I/O error on dev vda1, logical block 15432, lost async page write
I/O error, dev vda, sector 2048 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2`,

  ext4ErrorRemount: `EXT4-fs error (device vda1): ext4_find_entry:1658: inode #2: comm ls: reading directory lblock 0
Aborting journal on device vda1-8.
EXT4-fs (vda1): Remounting filesystem read-only`,

  xfsShutdown: `XFS (vdb): metadata I/O error in "xfs_buf_ioend+0x1a0/0x4b0 [xfs]" at daddr 0x2 len 1 error 5
XFS (vdb): log I/O error -5
XFS (vdb): Filesystem has been shut down due to log error (0x2).
XFS (vdb): Please unmount the filesystem and rectify the problem(s).`,

  machineCheckPanic: `mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 4: b200000000070f0f
mce: [Hardware Error]: TSC 0 ADDR 1234000 MISC 86
mce: [Hardware Error]: PROCESSOR 0:806ea TIME 1700000000 SOCKET 0 APIC 0 microcode ffffffff
mce: [Hardware Error]: Machine check: Processor context corrupt
Kernel panic - not syncing: Fatal local machine check
Kernel Offset: disabled`,

  memoryFailure: `Memory failure: 0x3f1a2b: Sending SIGBUS to java:3311 due to hardware memory corruption
Memory failure: 0x3f1a2b: recovery action for dirty LRU page: Recovered`,

  segfault: `nginx[1234]: segfault at 0 ip 00007f1234567890 sp 00007ffd12345678 error 4 in libc.so.6[7f1234500000+195000] likely on CPU 1 (core 1, socket 0)
Code: 48 8b 05 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff`,

  unknownNmi: `Uhhuh. NMI received for unknown reason 30 on CPU 0.
Do you have a strange power saving mode enabled?
Dazed and confused, but trying to continue`,
} as const;

export type SampleName = keyof typeof SAMPLE_REPORTS;

/** Ordinary console lines (boot and services) that must not be reported. */
export const SAMPLE_NOISE: readonly string[] = [
  "systemd[1]: Started Session 42 of user admin.",
  "systemd[1]: Starting Daily apt upgrade and clean activities...",
  'audit: type=1400 audit(1700000000.123:45): apparmor="STATUS" operation="profile_load" profile="unconfined" name="/usr/bin/man" pid=612 comm="apparmor_parser"',
  "IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
  "virtio_net virtio0 enp1s0: renamed from eth0",
  "EXT4-fs (vda1): mounted filesystem with ordered data mode. Quota mode: none.",
  "EXT4-fs (vda1): re-mounted. Quota mode: none.",
  "random: crng init done",
  "NET: Registered PF_INET6 protocol family",
  "e1000: eth0 NIC Link is Up 1000 Mbps Full Duplex, Flow Control: RX",
  "sd 0:0:0:0: [sda] 20971520 512-byte logical blocks: (10.7 GB/10.0 GiB)",
  "Freeing unused kernel image (initmem) memory: 2716K",
  "clocksource: tsc: mask: 0xffffffffffffffff max_cycles: 0x2b3e459bf4c, max_idle_ns: 440795289890 ns",
  "nf_conntrack: default automatic helper assignment has been turned off for security reasons",
  "loop0: detected capacity change from 0 to 8",
  "stress-ng: info:  [1234] dispatching hogs: 4 vm, 4 cpu, 2 io",
  "kauditd_printk_skb: 12 callbacks suppressed",
  "perf: interrupt took too long (2503 > 2500), lowering kernel.perf_event_max_sample_rate to 79750",
  "TCP: request_sock_TCP: Possible SYN flooding on port 80. Sending cookies.  Check SNMP counters.",
];

/** Lines that look like failures but are not (they must not be reported either). */
export const SAMPLE_LOOKALIKES: readonly string[] = [
  "WARNING: The mand mount option has been deprecated and",
  "XFS (loop4): WARNING: Reset corrupted AGFL on AG 0. 1 blocks leaked. Please unmount and run xfs_repair.",
  "traps: stress-ng[4242] general protection fault ip:7feb96eb56a1 sp:20000fd0 error:0 in stress-ng[7feb96e75000+84000]",
  "INFO: lockdep is turned off.",
  "INFO: NMI handler (perf_event_nmi_handler) took too long to run: 2.277 msecs",
  "ACPI: PM: Preparing to enter system sleep state S5",
];

/** Prefixes every line with a console timestamp and (when given) a `[ T123]` caller context. */
export function stampConsole(body: string, startSeconds: number, ctx?: string): string {
  let t = startSeconds;
  return body
    .split("\n")
    .map((line) => {
      t += 0.000137;
      const stamp = `[${t.toFixed(6).padStart(12)}]`;
      return ctx ? `${stamp}[${ctx.padStart(6)}] ${line}` : `${stamp} ${line}`;
    })
    .join("\n");
}
