"""sync.policy"""
