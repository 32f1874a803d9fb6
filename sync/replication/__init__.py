"""sync.replication"""
