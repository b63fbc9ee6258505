// SPDX-License-Identifier: GPL-2.0
/*
 * kglue/files.c - the file operations: /dev/rvmx (a misc device), the VM
 * and vCPU file descriptors (anonymous inodes, and the vCPU's mmap of its
 * run page) and the statistics files. Each operation calls the Rust side
 * (dev.rs, vm.rs, vcpu/, stats.rs), which makes every decision.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/sched.h>

#include "kglue.h"
#include "../uapi/rvmx.h"

/* ---- /dev/rvmx ---------------------------------------------------------- */

static const struct file_operations rvmx_dev_fops = {
	.owner = THIS_MODULE,	/* the module stays while the device is open */
	.unlocked_ioctl = rvmx_dev_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice rvmx_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "rvmx",
	.fops = &rvmx_dev_fops,
	.mode = 0600,
};

int rvmx_glue_misc_register(void)
{
	return misc_register(&rvmx_misc);
}

void rvmx_glue_misc_deregister(void)
{
	misc_deregister(&rvmx_misc);
}

/* ---- VM and vCPU file descriptors ---------------------------------------- */

static long rvmx_vm_fop_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return rvmx_vm_ioctl(f->private_data, cmd, arg);
}

static int rvmx_vm_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vm_release(f->private_data);
	return 0;
}

static const struct file_operations rvmx_vm_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = rvmx_vm_fop_ioctl,
	.release = rvmx_vm_fop_release,
	.llseek = noop_llseek,
};

static long rvmx_vcpu_fop_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	return rvmx_vcpu_ioctl(f->private_data, cmd, arg);
}

static int rvmx_vcpu_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vcpu_release(f->private_data);
	return 0;
}

/*
 * The vCPU mapping: page N of the file is rvmx_vcpu_page(vcpu, N), for N
 * below RVMX_VCPU_MMAP_PAGES. vm_insert_page() takes a reference on each
 * page, so the mapping stays valid after the vCPU is freed.
 */
static int rvmx_vcpu_fop_mmap(struct file *f, struct vm_area_struct *vma)
{
	unsigned long npages = vma_pages(vma), i;
	int r;

	if (vma->vm_pgoff >= RVMX_VCPU_MMAP_PAGES ||
	    npages > RVMX_VCPU_MMAP_PAGES - vma->vm_pgoff)
		return -EINVAL;
	for (i = 0; i < npages; i++) {
		r = vm_insert_page(vma, vma->vm_start + i * PAGE_SIZE,
				   rvmx_vcpu_page(f->private_data, vma->vm_pgoff + i));
		if (r)
			return r;
	}
	return 0;
}

static const struct file_operations rvmx_vcpu_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = rvmx_vcpu_fop_ioctl,
	.mmap = rvmx_vcpu_fop_mmap,
	.release = rvmx_vcpu_fop_release,
	.llseek = noop_llseek,
};

/*
 * Statistics files (KVM_GET_STATS_FD on a VM or vCPU fd): read-only, in
 * KVM's binary format (stats.rs writes it). private_data holds a
 * reference to the VM or vCPU, dropped at release.
 */
static ssize_t rvmx_vm_stats_fop_read(struct file *f, char __user *buf, size_t size, loff_t *pos)
{
	return rvmx_vm_stats_read(f->private_data, buf, size, pos);
}

static int rvmx_vm_stats_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vm_stats_release(f->private_data);
	return 0;
}

static const struct file_operations rvmx_vm_stats_fops = {
	.owner = THIS_MODULE,
	.read = rvmx_vm_stats_fop_read,
	.release = rvmx_vm_stats_fop_release,
	.llseek = noop_llseek,
};

static ssize_t rvmx_vcpu_stats_fop_read(struct file *f, char __user *buf, size_t size, loff_t *pos)
{
	return rvmx_vcpu_stats_read(f->private_data, buf, size, pos);
}

static int rvmx_vcpu_stats_fop_release(struct inode *inode, struct file *f)
{
	rvmx_vcpu_stats_release(f->private_data);
	return 0;
}

static const struct file_operations rvmx_vcpu_stats_fops = {
	.owner = THIS_MODULE,
	.read = rvmx_vcpu_stats_fop_read,
	.release = rvmx_vcpu_stats_fop_release,
	.llseek = noop_llseek,
};

/* As KVM's kvm_vm_ioctl_get_stats_fd: O_RDONLY, FMODE_PREAD. */
static int rvmx_stats_fd(void *owner, bool vcpu)
{
	struct file *file;
	int fd = get_unused_fd_flags(O_CLOEXEC);

	if (fd < 0)
		return fd;
	file = anon_inode_getfile(vcpu ? "rvmx-vcpu-stats" : "rvmx-vm-stats",
				  vcpu ? &rvmx_vcpu_stats_fops : &rvmx_vm_stats_fops,
				  owner, O_RDONLY);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	file->f_mode |= FMODE_PREAD;
	fd_install(fd, file);
	return fd;
}

int rvmx_glue_vm_stats_fd(void *vm)
{
	return rvmx_stats_fd(vm, false);
}

int rvmx_glue_vcpu_stats_fd(void *vcpu)
{
	return rvmx_stats_fd(vcpu, true);
}

int rvmx_glue_current_tgid(void)
{
	return task_tgid_nr(current);
}

int rvmx_glue_vm_fd(void *vm)
{
	return anon_inode_getfd("rvmx-vm", &rvmx_vm_fops, vm, O_RDWR | O_CLOEXEC);
}

int rvmx_glue_vcpu_fd(void *vcpu)
{
	return anon_inode_getfd("rvmx-vcpu", &rvmx_vcpu_fops, vcpu, O_RDWR | O_CLOEXEC);
}
